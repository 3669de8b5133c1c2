"""``cellbench sweep``: grids and multi-phase studies of ordinary runs; ``sweep show S``.

Only light imports here (the sweep package reads YAML and JSON and starts processes; torch is
imported by the trials, never by the sweep itself): ``cellbench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    MachineOption,
    RunsDirOption,
    SweepsDirOption,
    console,
    err_console,
    format_duration,
    log,
    log_markup,
    print_json,
    run_store,
    warn,
)
from cellbench.errors import BadInputError, CheckFailed, UsageError

SWEEP_HELP = (
    "Run a grid or a multi-phase study: every trial is an ordinary run (runs list, runs compare, "
    "clean and the TUI work on it) started as its own cellbench train process.\n\n"
    "cellbench sweep --profile demo --grid train.lr=1e-3,3e-3 --grid train.batch_size=32,64 "
    "[--seeds 3] [--epochs 2] [--workers 2]: every combination of the --grid values, --set fixed "
    "for all.\n\n"
    "cellbench sweep FILE [--phase NAME]: a sweep file (a path, or a shipped one: "
    "tiny_imagenet_grid, flowers_phases, demo_phases) with a base profile, a search space, seeds "
    "and phases smoke → grid → seeds → final.\n\n"
    "cellbench sweep show NAME: the leaderboard again.\n\n"
    "cellbench sweep (nothing else): the workspace's default sweep (defaults.sweep) if set, "
    "else a list of the sweep files and of the sweeps with their status and the command that "
    "starts or resumes each (exit 0).\n\n"
    "Running a sweep again skips its finished trials and resumes interrupted ones. The sweep "
    "folder (sweeps/NAME/) holds spec.yaml, trials.json, state.json, leaderboard.csv/.json and "
    "one log per trial. Exit codes: 0 done · 1 no trial completed, or the smoke phase failed · "
    "2 bad usage (or Ray missing) · 3 bad sweep file · 4 the sweep is running elsewhere or "
    "another sweep has that name · 130 interrupted (trials checkpointed; run it again to resume)."
)


def sweep_command(
    target: Annotated[
        str | None,
        typer.Argument(help="A sweep file (path or shipped name), or 'show'.", show_default=False),
    ] = None,
    show_name: Annotated[
        str | None, typer.Argument(help="With 'show': the sweep's name.", show_default=False)
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Base profile name or YAML file.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="A config key fixed for every trial (repeatable)."),
    ] = None,
    grids: Annotated[
        list[str] | None,
        typer.Option(
            "--grid", "-g", help="A key and its values: --grid train.lr=1e-3,3e-3 (repeatable)."
        ),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Shorthand for --set task=.")] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Shorthand for --set data.path=.")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", min=1, help="Train every config with seeds 1..N.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs of every trial (every phase).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="Trials at once (default: one per GPU, or cores/2)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Sweep name (default: the file's or profile's).")
    ] = None,
    phase: Annotated[
        str | None, typer.Option("--phase", help="Run this phase of the sweep file only.")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="local (a process pool) or ray (Ray Tune).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (default: local Ray).")
    ] = None,
    asha: Annotated[
        bool, typer.Option("--asha", help="Ray: stop poor trials early (ASHA); they are 'pruned'.")
    ] = False,
    gpus_per_trial: Annotated[
        float | None, typer.Option("--gpus-per-trial", min=0, help="Ray: GPUs per trial.")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Train failed trials again (from new weights).")
    ] = False,
    max_trials: Annotated[
        int,
        typer.Option(
            "--max-trials", min=1, help="Refuse a sweep of more trials than this (counted first)."
        ),
    ] = 1000,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Each trial trains with N processes (train --nproc N): N GPUs per trial on the "
            "local pool, N GPUs of Ray resources per trial.",
        ),
    ] = 1,
    machine: MachineOption = None,
    runs_dir: RunsDirOption = None,
    sweeps_dir: SweepsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    bare = target is None and not (
        grids or profile or overrides or task or data or seeds or epochs or name or phase
    )
    if bare:
        from cellbench.workspace import current

        ws = current()
        target = ws.default("sweep") if ws is not None else None
        if target is None:
            _list(runs_dir, sweeps_dir, json_output)
            return
        log(f"sweep: {escape(target)} (workspace default)")
    if target == "show":
        if not show_name:
            raise UsageError("sweep show: give the sweep's name, e.g. cellbench sweep show demo")
        _show(show_name, runs_dir, sweeps_dir, json_output)
        return
    if show_name is not None:
        raise UsageError(f"sweep: unexpected argument '{show_name}' (one sweep file at a time)")
    if backend not in ("local", "ray"):
        raise UsageError(f"--backend {backend}: use local or ray")
    if backend == "local" and (address or asha or gpus_per_trial is not None):
        raise UsageError("--address, --asha and --gpus-per-trial go with --backend ray")
    if backend == "ray":
        from cellbench.sweep.ray_backend import import_ray

        import_ray()  # a missing extra is said now, before any trial starts (exit 2)

    if machine is not None:
        from cellbench.machines import resolve

        resolve(machine)  # an unknown name is said now (exit 2), not by every trial
    from cellbench.sweep import spec as specs
    from cellbench.sweep.runner import Sweep, SweepOptions, open_sweep
    from cellbench.sweep.store import default_sweeps_root

    sets = list(overrides or [])
    for key, value in (("task", task), ("data.path", data)):
        if value is not None:
            sets.append(f"{key}={value}")
    if target is not None:
        if grids or profile or seeds:
            raise UsageError("sweep FILE: --grid, --profile and --seeds belong in the file")
        spec = specs.load_sweep_file(target, sets, epochs, name)
        _default_features(spec)
    else:
        if phase:
            raise UsageError("--phase needs a sweep FILE")
        default = f"{Path(profile).stem if profile else 'sweep'}-grid"
        spec = specs.from_command_line(profile, sets, grids or [], seeds, epochs, name or default)
    from cellbench.sweep import limits

    # counted, then every grid value checked, before any folder or trial exists
    limits.check_size(spec, max_trials)
    limits.check_values(spec)
    store = run_store(runs_dir)
    root = sweeps_dir or default_sweeps_root(store.root)
    reuse = target is None and name is None
    folder = open_sweep(spec, root, reuse_default=reuse)
    options = SweepOptions(
        backend=backend,
        workers=workers,
        address=address,
        asha=asha,
        gpus_per_trial=gpus_per_trial,
        retry_failed=retry_failed,
        phase=phase,
        nproc=nproc,
        machine=machine,
    )
    log_markup(f"sweep [bold]{escape(spec.name)}[/] · {escape(str(folder.root))}")
    outcome = Sweep(spec, folder, store, options, say=log_markup).run()
    board = outcome.board
    _render(board, err_console if json_output else console)
    if json_output:
        print_json(board)
    counts = " · ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    log(f"{counts} · {folder.leaderboard_csv}")
    if outcome.interrupted:
        from cellbench.signals import TERMINATION_SIGNALS, Terminated

        if outcome.signum in TERMINATION_SIGNALS:
            raise Terminated(outcome.signum)  # the root exits 128 + it: 143 after SIGTERM
        raise KeyboardInterrupt  # the root prints "interrupted" and exits 130
    if outcome.stopped_by:
        raise CheckFailed(
            f"{folder.root}: phase {outcome.stopped_by} failed, later phases not run; see the "
            "trial logs in logs/, fix, and sweep again with --retry-failed"
        )
    if not any(r["status"] == "completed" for r in board["rows"]):
        raise CheckFailed(f"{folder.root}: no trial completed (see the trial logs in logs/)")
    failed = sum(1 for r in board["rows"] if r["status"] == "failed")
    if failed:
        warn(f"{failed} trial(s) failed; the others are ranked (sweep again with --retry-failed)")


sweep_command.__doc__ = SWEEP_HELP


def _default_features(spec) -> None:
    """A sweep file whose trials need a feature store and name none trains on the workspace's
    default one (train's rule, docs/workspace.md), said on stderr."""
    from cellbench.workspace import current

    ws = current()
    given = any(s.startswith("data.features=") for s in spec.sets) or "data.features" in (
        spec.space or {}
    )
    if ws is None or given:
        return
    from cellbench.config import load_config

    resolved = load_config(spec.profile, None, spec.sets)
    if resolved.data.features is not None:
        return
    from cellbench.tasks import get_task  # torch: only for a sweep that may need it
    from cellbench.workspace.defaults import choose_feature_store

    if get_task(resolved.task).needs_feature_store(resolved):
        store = choose_feature_store(ws, allow_stale=resolved.data.features_force)
        if store is not None:
            spec.sets.append(f"data.features={store.path.resolve()}")
            log(f"features: {escape(store.shown)} ({store.why})")


def _list(runs_dir: Path | None, sweeps_dir: Path | None, json_output: bool) -> None:
    """No argument and no workspace default: what can be started or resumed (exit 0)."""
    from cellbench.sweep.catalog import sweep_entries, sweep_files
    from cellbench.sweep.store import default_sweeps_root

    root = sweeps_dir or default_sweeps_root(run_store(runs_dir).root)
    files, entries = sweep_files(), sweep_entries(root)
    if json_output:
        print_json(
            {
                "files": [f.to_dict() for f in files],
                "sweeps_dir": str(root),
                "sweeps": [e.to_dict() for e in entries],
            }
        )
        return
    table = Table(title="Sweep files · cellbench sweep NAME")
    for column in ("name", "from", "about"):
        table.add_column(column, overflow="fold")
    for f in files:
        table.add_row(f.name, f.origin, escape(f.about))
    console.print(table)
    if entries:
        table = Table(title=escape(f"Sweeps in {root}"))
        for column in ("sweep", "status", "trials done", "to go on"):
            table.add_column(column, overflow="fold")
        for e in entries:
            colour = {"completed": "green", "running": "cyan", "failed": "red"}.get(
                e.status, "yellow"
            )
            table.add_row(
                e.name, f"[{colour}]{e.status}[/]", f"{e.done}/{e.total}", escape(e.command)
            )
        console.print(table)
    else:
        console.print(f"No sweep in {escape(str(root))} yet.")
    console.print(
        "[dim]A grid: cellbench sweep --profile demo --grid train.lr=1e-3,3e-3 · a default for "
        "a bare `cellbench sweep`: cellbench config set defaults.sweep NAME[/]"
    )


def _show(name: str, runs_dir: Path | None, sweeps_dir: Path | None, json_output: bool) -> None:
    from cellbench.sweep.store import SweepFolder, default_sweeps_root

    store = run_store(runs_dir)
    root = sweeps_dir or default_sweeps_root(store.root)
    folder = SweepFolder(root / name)
    if not folder.leaderboard_json.is_file():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        listed = f"; sweeps: {', '.join(known)}" if known else ""
        raise BadInputError(f"{folder.root}: no sweep '{name}' with a leaderboard{listed}")
    import json

    try:
        board = json.loads(folder.leaderboard_json.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{folder.leaderboard_json}: unreadable leaderboard ({exc})") from exc
    _render(board, err_console if json_output else console)
    if json_output:
        print_json(board)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _render(board: dict[str, Any], out) -> None:
    metric = board.get("metric") or "metric"
    direction = {"min": " (lower is better)", "max": " (higher is better)"}.get(board.get("mode"))
    table = Table(title=f"sweep {board['sweep']} · {metric}{direction or ''}")
    phases = {r["phase"] for r in board["rows"]}
    columns = ["rank", "run"] + (["phase"] if len(phases) > 1 else [])
    columns += ["config", "seed", "status", metric, "mean ± std (n)", "epochs", "time"]
    for column in columns:
        right = column in ("rank", "seed", metric, "epochs", "time")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    best = (board.get("best") or {}).get("trial")
    for r in board["rows"]:
        spread = ""
        if r.get("mean") is not None:
            std = f" ± {r['std']:.2g}" if r.get("std") is not None else ""
            spread = f"{r['mean']:.4g}{std} ({r['n']})"
        colour = {"completed": "green", "failed": "red"}.get(r["status"], "yellow")
        cells = [str(r.get("rank") or "-"), r.get("run") or f"{r['trial']} (no run)"]
        cells += [r["phase"]] if len(phases) > 1 else []
        cells += [
            r["config"],
            "-" if r.get("seed") is None else str(r["seed"]),
            f"[{colour}]{r['status']}[/]",
            _number(r.get("value")),
            spread,
            str(r.get("epochs") or 0),
            format_duration(r.get("time_s")),
        ]
        table.add_row(*cells, style="bold" if r["trial"] == best else None)
    out.print(table)
    if board.get("best"):
        b = board["best"]
        out.print(
            f"best: {b['trial']} ({b['run']}) {b['metric']} {_number(b['value'])}\n"
            f"train it again: {escape(b['command'])}",
            highlight=False,
            soft_wrap=True,
        )
