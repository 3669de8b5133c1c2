"""Shared CLI pieces: consoles, common options, JSON output.

Machine output (``--json``) goes to stdout; logs, progress and errors go to stderr, so
``cellbench runs list --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cellbench.runs.store import RUNS_DIR_ENV, RunStore

console = Console()  # stdout: tables and results for people
err_console = Console(stderr=True)  # stderr: logs, progress, warnings, errors

RunsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir",
        envvar=RUNS_DIR_ENV,
        help="Folder holding the runs (default: ./runs).",
        show_default=False,
    ),
]
SweepsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--sweeps-dir",
        envvar="CELLBENCH_SWEEPS_DIR",
        help="Folder holding the sweeps (default: sweeps/ beside the runs folder).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout (logs on stderr).")
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing output file that cellbench did not write (docs/outputs.md).",
    ),
]

MachineOption = Annotated[
    str | None,
    typer.Option(
        "--machine",
        help="Machine profile (profiles/machines/: cpu, mig-12gb, a100-80gb, h100-80gb, h200) "
        "or 'auto' (by the detected device and its memory): batch, accumulation, AMP, "
        "channels_last, compile, workers, feature batch; the study's effective batch is kept.",
        show_default=False,
    ),
]


def command_arguments(ctx, drop: tuple[str, ...] = ()) -> list[str]:
    """The command line that gives ``ctx``'s command its parsed options again, minus ``drop``
    (parameter names): what ``--nproc`` hands to each torchrun worker. Built from the parsed
    values, not ``sys.argv``, so it is the same from the shell, ``python -m`` or a test runner."""
    argv: list[str] = []
    node = ctx
    while node.parent is not None:  # the subcommand names below the root ("train")
        argv.insert(0, node.info_name)
        node = node.parent
    for param in ctx.command.params:
        if param.name in drop or getattr(param, "param_type_name", "") != "option":
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default or (param.multiple and not value):
            continue
        flag = max(param.opts, key=len)  # the long form
        if param.is_flag:
            if value:
                argv.append(flag)
        elif param.multiple:
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def run_store(runs_dir: Path | None) -> RunStore:
    return RunStore(runs_dir)


def print_json(data: Any) -> None:
    from cellbench.strict_json import dumps  # NaN/inf as null: stdout is strict JSON too

    sys.stdout.write(dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """A line on stderr, as plain text: paths and library messages may hold brackets
    ("case[HE].tif", gloo's "[/.../pair.cc:545]") that Rich would read as markup."""
    err_console.print(message, markup=False, highlight=False)


def log_markup(message: str) -> None:
    """A line on stderr with Rich markup: the caller escapes what it interpolates."""
    err_console.print(message, highlight=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def stderr_progress():
    """A Rich bar (description, bar, done/total) on stderr, drawn only on a terminal and removed
    when done: ``--json`` output and logs stay clean."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
