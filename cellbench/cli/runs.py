"""``cellbench runs list|show``: what runs exist and how they went."""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    OverwriteOption,
    RunsDirOption,
    console,
    err_console,
    format_duration,
    log,
    print_json,
    run_store,
)
from cellbench.cli.lists import list_options, split_values
from cellbench.errors import BadInputError, UsageError
from cellbench.runs.events import read_events
from cellbench.runs.summary import RunSummary, summarize

app = typer.Typer(help="List, inspect and compare runs.", no_args_is_help=True)

STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "failed": "red",
    "crashed": "red",
    "interrupted": "yellow",
    "created": "dim",
}


def _started(ts: float | None) -> str:
    """Today's runs by time, older ones by date: the table stays narrow."""
    if not ts:
        return "-"
    when = dt.datetime.fromtimestamp(ts)
    return when.strftime("%H:%M") if when.date() == dt.date.today() else when.strftime("%Y-%m-%d")


def _status(s: RunSummary) -> str:
    style = STATUS_STYLE.get(s.status, "")
    text = f"[{style}]{s.status}[/]" if style else s.status
    return f"{text} [bold red]damaged[/]" if s.damaged else text


def report_damage(summaries: list[RunSummary]) -> None:
    """One stderr line per damaged run: the other runs' output (and --json on stdout) stay clean.

    A damaged run is still listed from what is readable; the command exits 0.
    """
    for s in summaries:
        if s.damaged:
            reasons = escape("; ".join(s.damaged))
            # soft_wrap: one line, whatever the terminal width (scripts grep it)
            err_console.print(
                f"[yellow]warning:[/] {escape(s.folder)} damaged: {reasons}",
                highlight=False,
                soft_wrap=True,
            )


def _best(s: RunSummary) -> str:
    if s.best_value is None:
        return "-"
    return escape(f"{s.best_metric}={s.best_value:.4g}")


@app.command("list")
def list_runs(runs_dir: RunsDirOption = None, json_out: JsonOption = False) -> None:
    """List every run: id, name, task, status, epochs, best metric, start and duration."""
    store = run_store(runs_dir)
    summaries = [summarize(run) for run in store.runs()]
    report_damage(summaries)
    if json_out:
        print_json([s.to_dict() for s in summaries])
        return
    if not summaries:
        console.print(
            f"No runs in {escape(str(store.root))}/ yet. Start one with [bold]cellbench train[/]."
        )
        return
    cells = _list_cells(summaries)
    table = Table(
        title=f"Runs in {store.root}/",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    columns = _fitting_columns(cells, console.width)
    for column in columns:
        # names are never folded while dropping a column can make room; numbers never split
        foldable = column == "name"
        table.add_column(
            column,
            justify="right" if column in ("id", "epochs") else "left",
            no_wrap=not foldable,
            overflow="fold",
            min_width=8 if foldable else len(column),
        )
    for row in cells[1:]:
        table.add_row(*(row[cells[0].index(column)] for column in columns))
    console.print(table)


LIST_COLUMNS = ("id", "name", "task", "status", "epochs", "best", "started", "duration")
# what goes first when the terminal is too narrow for every column with whole names
DROPPED_FIRST = ("duration", "started", "task")


def _list_cells(summaries: list[RunSummary]) -> list[list[str]]:
    """The header then one row per run. One monitored metric for all: it goes in the header."""
    metrics = {s.best_metric for s in summaries if s.best_value is not None}
    shared = metrics.pop() if len(metrics) == 1 else None
    header = [*LIST_COLUMNS]
    if shared:
        header[LIST_COLUMNS.index("best")] = f"best {escape(shared)}"
    rows = [header]
    for s in summaries:
        best = f"{s.best_value:.4g}" if shared and s.best_value is not None else _best(s)
        rows.append([
            str(s.id), s.name, escape(s.task or "-"), _status(s), str(s.epochs), best,
            _started(s.started), format_duration(s.duration_s),
        ])  # fmt: skip
    return rows


def _fitting_columns(cells: list[list[str]], width: int) -> list[str]:
    """The columns to show: all, unless the longest name would fold; then the least useful go."""
    from rich.text import Text

    def need(columns: list[str]) -> int:
        widths = [
            max(Text.from_markup(row[cells[0].index(c)]).cell_len for row in cells) for c in columns
        ]
        return sum(widths) + 2 * (len(columns) - 1)

    columns = list(cells[0])
    for drop in DROPPED_FIRST:
        if need(columns) <= width:
            break
        columns = [c for c in columns if c != drop and not c.startswith(f"{drop} ")]
    return columns


@app.command("show")
def show_run(
    run: Annotated[
        str,
        typer.Argument(
            help="Run id (2), name (digestive), folder (0002-digestive) or path to one."
        ),
    ],
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one run: summary, files, last epochs and warnings."""
    paths = run_store(runs_dir).resolve(run)
    summary = summarize(paths)
    report_damage([summary])
    events = read_events(paths.events)
    warnings = [e for e in events if e.get("kind") == "warning"]
    epochs = [e for e in events if e.get("kind") == "epoch"]
    files = sorted(
        str(p.relative_to(paths.root))
        for p in paths.root.rglob("*")
        if p.is_file() and p.name != "lock"
    )
    if json_out:
        print_json(
            {
                **summary.to_dict(),
                "path": str(paths.root),
                "files": files,
                "warnings": warnings,
                "last_epoch": epochs[-1] if epochs else None,
            }
        )
        return
    table = Table(show_header=False, title=f"Run {paths.root.name}")
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("path", escape(str(paths.root))),
        ("task", escape(summary.task or "-")),
        ("model", escape(summary.model or "-")),
        ("status", _status(summary)),
        ("damaged", escape("; ".join(summary.damaged)) or "no"),
        ("epochs", str(summary.epochs)),
        ("best", _best(summary)),
        ("started", _started(summary.started)),
        ("duration", format_duration(summary.duration_s)),
        ("files", escape(", ".join(files)) or "-"),
    ):
        table.add_row(key, value)
    console.print(table)
    if epochs:
        hist = Table(title="Last epochs")
        keys = [k for k in epochs[-1] if k not in ("kind", "time", "best")]
        for k in keys:
            hist.add_column(escape(k))
        for e in epochs[-5:]:
            hist.add_row(*(escape(_fmt(e.get(k))) for k in keys))
        console.print(hist)
    for w in warnings:
        severity, check, message = (str(w.get(k, "-")) for k in ("severity", "check", "message"))
        console.print(f"[yellow]{escape(severity)}[/] {escape(f'[{check}] {message}')}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


@app.command("compare", cls=list_options("--metric", "-m"))
def compare_runs(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (id, name, folder or path).")],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="History columns to compare, e.g. -m val_loss val_accuracy or "
            "val_loss,val_accuracy, after the runs (default: all).",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the runs' curves to this PNG.")
    ] = None,
    overwrite: OverwriteOption = False,
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Compare runs side by side: final and best value of each metric; curves with --plot."""
    from cellbench import outputs
    from cellbench.runs.compare import compare, load_curves, metric_names, plot_curves

    if plot is not None:
        outputs.check(plot, overwrite=overwrite, option="--plot")

    store = run_store(runs_dir)
    resolved = [store.resolve(ref) for ref in runs]
    curves = load_curves(resolved)
    report_damage([c.summary for c in curves])
    available = metric_names(curves)
    metrics = split_values(metric) or available
    unknown = [m for m in metrics if m not in available]
    if unknown:
        close = difflib.get_close_matches(unknown[0], available, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(
            f"--metric {unknown[0]}: not in these runs' history.csv ({hint}"
            f"available: {', '.join(available) or 'none, no epoch finished yet'})"
        )
    if not metrics:
        raise BadInputError(f"{resolved[0].history}: no epoch finished yet, nothing to compare")
    records = compare(curves, metrics)
    if plot is not None:
        plot_curves(curves, metrics, plot)
        outputs.record(plot)
        log(f"curves written to {plot}")
    if json_out:
        print_json(records)
        return
    # runs as columns: a study compares a few runs over many metrics
    table = Table(title="Runs compared: final value, and best (epoch)", box=box.SIMPLE_HEAD)
    table.add_column("")
    for record in records:
        table.add_column(record["folder"], justify="right", overflow="fold")
    table.add_row("status", *(r["status"] for r in records))
    if any(r["damaged"] for r in records):
        table.add_row("damaged", *("[bold red]yes[/]" if r["damaged"] else "no" for r in records))
    table.add_row("epochs", *(str(r["epochs"]) for r in records), end_section=True)
    for m in metrics:
        values = [r["metrics"][m] for r in records]
        table.add_row(f"[bold]{escape(m)}[/]", *(_cell(v, "final") for v in values))
        table.add_row("  best", *(_cell(v, "best") for v in values))
    console.print(table)


def _cell(value: dict | None, which: str) -> str:
    if value is None:
        return "-"
    if which == "final":
        return f"{value['final']:.4g}"
    return f"{value['best']:.4g} ({value['best_epoch']})"


@app.command("stop")
def stop_run(
    run: Annotated[str, typer.Argument(help="Run id (2), name, folder or path to one.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the training has checkpointed and exited.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0, metavar="SECONDS", help="With --wait: give up after this long."
        ),
    ] = None,
    runs_dir: RunsDirOption = None,
) -> None:
    """Stop a running training: it finishes its step, keeps its last completed epoch in
    last.pt and ends `interrupted`; then prints the command that resumes it.

    Sends SIGINT to the process holding the run's lock, after checking it is that run's writer
    on this host. A run that is not running is left alone (exit 0). Exit codes: 0 stopped or not
    running · 1 --timeout passed before it exited · 3 no such run · 4 its writer runs on another
    host or belongs to another user.
    """
    from cellbench.runs.stop import NotRunning, request_stop, wait_stopped

    store = run_store(runs_dir)
    paths = store.resolve(run)
    try:
        holder = request_stop(paths)
    except NotRunning as exc:
        log(f"{escape(str(exc))}; status {summarize(paths).status}")
        _print_commands(paths)
        return
    log(
        f"{paths.root.name}: {holder.signal_name} sent to pid {holder.pid}; "
        "it stops after the current step"
    )
    if not wait:
        return
    if not wait_stopped(paths, holder, timeout):
        err_console.print(f"[yellow]{paths.root.name}: still running after {timeout:g} s[/]")
        raise typer.Exit(1)
    log(f"{paths.root.name}: {summarize(paths).status}")
    _print_commands(paths)


def _print_commands(paths) -> None:
    from cellbench.runs.stop import resume_commands

    if summarize(paths).status in ("completed", "running"):
        return
    for what, command in resume_commands(paths).items():
        console.print(f"{what:<8} {escape(command)}", highlight=False, soft_wrap=True)


@app.command("export")
def export_runs(
    runs: Annotated[list[str], typer.Argument(help="Runs to export (id, name, folder or path).")],
    tensorboard: Annotated[
        Path,
        typer.Option(
            "--tensorboard",
            metavar="DIR",
            help="Write TensorBoard event files here, one folder per run.",
        ),
    ],
    runs_dir: RunsDirOption = None,
) -> None:
    """Export runs for other tools: `--tensorboard DIR` writes every history column (losses, loss
    terms, metrics, lr) per epoch and the config as hparams; open with `tensorboard --logdir DIR`.
    Needs the tensorboard package (pip install cellbench[tensorboard])."""
    from cellbench.engine.tensorboard import export_run, require_tensorboard

    store = run_store(runs_dir)
    resolved = [store.resolve(ref) for ref in runs]  # every name checked before writing any
    require_tensorboard()
    for paths in resolved:
        target, rows = export_run(paths, tensorboard)
        log(f"{paths.root.name}: {rows} epochs -> {target}")
