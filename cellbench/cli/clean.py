"""``cellbench clean``: remove a run's checkpoints or outputs, feature stores, prepared caches, and
release this process's CUDA memory. Shows what goes first, asks before removing anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    RunsDirOption,
    SweepsDirOption,
    console,
    err_console,
    format_bytes,
    log,
    print_json,
    run_store,
)
from cellbench.errors import UsageError
from cellbench.runs.clean import (
    ALL_RUN_KINDS,
    CHECKPOINT_KINDS,
    CleanReport,
    Removal,
    check_data_root,
    execute,
    plan_cache_clean,
    plan_features_clean,
    plan_run_clean,
    plan_runs_clean,
)
from cellbench.runs.lock import RunLock

DATA_DIR_ENV = "CELLBENCH_DATA_DIR"


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}" if unit == "d" else f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _shown(path: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            return str(Path(root.name) / path.relative_to(root))
        except ValueError:
            continue
    return str(path)


def _plan_table(removals: list[Removal], roots: list[Path], title: str) -> Table:
    table = Table(title=title)
    table.add_column("kind")
    table.add_column("path")
    table.add_column("size", justify="right")
    table.add_column("age", justify="right")
    for r in removals:
        note = " [dim](link, target kept)[/]" if r.path.is_symlink() else ""
        if r.kept:
            note = " [dim](cellbench's files only, folder kept)[/]"
        table.add_row(
            r.kind, escape(_shown(r.path, roots)) + note, format_bytes(r.bytes), format_age(r.age_s)
        )
    total = sum(r.bytes for r in removals)
    table.add_row(
        "[bold]total[/]", f"{len(removals)} item(s)", f"[bold]{format_bytes(total)}[/]", ""
    )
    return table


def _cuda_table(result: dict[str, Any]) -> Table:
    table = Table(title="CUDA memory of this process")
    for column in (
        "device",
        "allocated before",
        "allocated after",
        "reserved before",
        "reserved after",
    ):
        table.add_column(column, justify="left" if column == "device" else "right")
    for d in result["devices"]:
        table.add_row(
            f"{d['index']}: {d['name']}",
            format_bytes(d["allocated_before"]),
            format_bytes(d["allocated_after"]),
            format_bytes(d["reserved_before"]),
            format_bytes(d["reserved_after"]),
        )
    return table


def _render_cuda(result: dict[str, Any], out) -> None:
    out.print(f"gc: collected {result['gc_collected']} unreachable objects", highlight=False)
    out.print(result["message"], highlight=False)
    if result["devices"]:
        out.print(_cuda_table(result))
    if result["cuda_available"]:
        out.print(f"[yellow]note:[/] {result['note']}", highlight=False)
    nvml = result["nvml"]
    if nvml["available"]:
        procs = Table(title="GPU processes (NVML)")
        for column in ("pid", "name", "device", "GPU memory"):
            procs.add_column(column, justify="right" if column != "name" else "left")
        for p in nvml["processes"]:
            procs.add_row(str(p["pid"]), p["name"], str(p["device"]), format_bytes(p["used"]))
        out.print(procs if nvml["processes"] else "no process is using a GPU")
    elif result["cuda_available"]:
        out.print(f"GPU processes: {nvml['message']}", highlight=False)


def _confirm(removals: list[Removal]) -> bool:
    if not _stdin_is_tty():
        raise UsageError(
            "clean: stdin is not a terminal, cannot ask for confirmation; pass --yes to remove "
            "(nothing was removed)"
        )
    total = format_bytes(sum(r.bytes for r in removals))
    return typer.confirm(f"Remove {len(removals)} item(s), {total}?", default=False)


def clean(
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="Run id, name, folder or path: remove its checkpoints (all outputs with --all).",
        ),
    ] = None,
    all_outputs: Annotated[
        bool,
        typer.Option(
            "--all",
            help="With --run: also events, history, metrics, eval, LR-finder outputs "
            "(config.yaml stays).",
        ),
    ] = False,
    features: Annotated[
        str | None,
        typer.Option(
            "--features", metavar="TAG", help="Remove the feature store <data-dir>/features/TAG."
        ),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help="Remove prepared-data caches under --data-dir: the files cellbench's store "
            "manifests list, nothing else; raw data is never touched.",
        ),
    ] = False,
    cuda: Annotated[
        bool,
        typer.Option("--cuda", help="Collect garbage, empty the CUDA cache, list GPU processes."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep", metavar="S", help="Remove the checkpoints of every trial of sweep S."
        ),
    ] = None,
    json_out: JsonOption = False,
    runs_dir: RunsDirOption = None,
    sweeps_dir: SweepsDirOption = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar=DATA_DIR_ENV,
            help="Data root holding caches and features/ (never / or your home folder; "
            "default: the workspace's data folder, else ./data).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Remove run checkpoints or outputs, feature stores or prepared caches; release CUDA memory.

    Shows what it will remove (size, age) and asks first unless --yes.
    Never removes anything outside the runs and data roots; a symlink is unlinked, never followed.
    From a data store, only the files its manifests list as cellbench's are removed.
    A store folder holding anything else stays, with it, listed as skipped with the reason.
    A run written by a live process is refused (exit 4); a missing run exits 3.
    """
    if not (run or features or cache or cuda or sweep):
        raise UsageError(
            "clean: nothing to clean; pass --run RUN, --sweep S, --features TAG, --cache or --cuda"
        )
    if all_outputs and not (run or sweep):
        raise UsageError("clean: --all goes with --run RUN or --sweep S")

    removals: list[Removal] = []
    roots: list[Path] = []
    run_paths = None
    if run:
        run_paths = run_store(runs_dir).resolve(run)  # the one run resolver; missing: exit 3
        # the folder holding the run is the root: the runs folder, or the one a path named
        roots.append(run_paths.root.parent.resolve())
        removals += plan_run_clean(run_paths, ALL_RUN_KINDS if all_outputs else CHECKPOINT_KINDS)
    if sweep:
        store = run_store(runs_dir)
        roots.append(store.root.resolve())
        removals += _sweep_removals(sweep, store, sweeps_dir, all_outputs)
    if features or cache:
        if data_dir is None:
            from cellbench.workspace import workspace_folder

            data_dir = workspace_folder("data", "data")
        check_data_root(data_dir)  # never /, ~ or above it: exit 2
        roots.append(data_dir.resolve())
        if features:
            removals += plan_features_clean(data_dir, features)
        if cache:
            removals += plan_cache_clean(data_dir)
    removals = _dedupe(removals)

    out = err_console if json_out else console
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "removed": [],
        "bytes_freed": 0,
        "skipped": [],
        "cuda": None,
    }
    if run or features or cache or sweep:
        report = _clean_files(removals, roots, run_paths, dry_run, yes, out)
        result.update(report.to_dict())
    if cuda:
        if dry_run:
            out.print("dry run: would collect garbage and empty this process's CUDA cache")
        else:
            from cellbench.engine.reset import release_memory  # imports torch: only when asked

            result["cuda"] = release_memory()
            _render_cuda(result["cuda"], out)
    if json_out:
        print_json(result)


def _sweep_removals(name: str, store, sweeps_dir: Path | None, all_outputs: bool) -> list[Removal]:
    """The checkpoints (all outputs with --all) of the runs of sweep ``name``'s trials.

    A sweep still running is refused (exit 4): it would resume a trial from what is removed."""
    from cellbench.errors import BadInputError, RunConflict
    from cellbench.runs.lock import lock_holder_alive
    from cellbench.sweep.store import SweepFolder, default_sweeps_root

    folder = SweepFolder((sweeps_dir or default_sweeps_root(store.root)) / name)
    if not folder.exists():
        raise BadInputError(f"{folder.root}: no sweep '{name}'")
    if lock_holder_alive(folder.lock):
        raise RunConflict(f"{folder.root}: the sweep is running; stop it first")
    runs = [r for r in (store.find(t.name) for t in folder.read_trials()) if r is not None]
    return plan_runs_clean(runs, ALL_RUN_KINDS if all_outputs else CHECKPOINT_KINDS)


def _dedupe(removals: list[Removal]) -> list[Removal]:
    seen: set[str] = set()
    unique = []
    for r in removals:
        key = os.path.abspath(r.path)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _clean_files(removals, roots, run_paths, dry_run, yes, out) -> CleanReport:
    plan = CleanReport.planned(removals)
    if not plan.removed:
        out.print("Nothing to remove.")
        _print_kept(plan.skipped, roots, out)
        return plan
    out.print(_plan_table(plan.removed, roots, "Would remove" if dry_run else "To remove"))
    _print_kept(plan.skipped, roots, out)
    if dry_run:
        out.print("dry run: nothing removed")
        return plan
    if not yes and not _confirm(plan.removed):
        out.print("Nothing removed.")
        return CleanReport(skipped=plan.skipped)
    if run_paths is not None:
        # Hold the run's lock while deleting so a `train` cannot start on it halfway through.
        with RunLock(run_paths.lock):
            report = execute(removals, roots)
    else:
        report = execute(removals, roots)
    log(f"removed {len(report.removed)} item(s), freed {format_bytes(report.bytes_freed)}")
    if report.skipped:
        log(f"kept {len(report.skipped)} folder(s) holding data cellbench did not write")
    return report


def _print_kept(skipped: list[Removal], roots: list[Path], out) -> None:
    """The folders clean leaves in place, and why (a store holding the user's files...)."""
    if not skipped:
        return
    table = Table(title="Kept (skipped)")
    table.add_column("kind")
    table.add_column("path")
    table.add_column("reason", overflow="fold")
    for r in skipped:
        table.add_row(r.kind, escape(_shown(r.path, roots)), escape(r.skipped or ""))
    out.print(table)
