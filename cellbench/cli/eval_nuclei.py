"""``cellbench eval --run RUN`` for nuclei runs: progress, the PanNuke report, where it went."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from cellbench.cli.common import console, log, print_json, stderr_progress, warn
from cellbench.runs.layout import RunPaths


def eval_nuclei_run(
    paths: RunPaths,
    split: str,
    checkpoint: str,
    batch_size: int | None,
    device: str | None,
    tune: bool,
    allow_leak: bool,
    export: Path | None,
    workers: int,
    json_out: bool,
    fold: int | None = None,
) -> None:

    from cellbench.cli.eval import render_pannuke
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run  # torch: only when evaluating

    where = f"fold {fold}" if fold is not None else split
    log(f"evaluating {paths.root.name} on {where} with {checkpoint}.pt ...")
    with stderr_progress() as progress:
        bars: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total or None)
            progress.update(bars[stage], completed=done, total=total or None)

        result = evaluate_nuclei_run(
            paths,
            split=split,
            checkpoint=checkpoint,
            batch_size=batch_size,
            device=device,
            allow_leak=allow_leak,
            tune=tune,
            export=export,
            workers=workers,
            progress=report,
            fold=fold,
        )
    tuning = result.get("tuning")
    if tuning:
        log(
            f"post-processing tuned on the val fold {tuning['folds'][0]} ({tuning['tiles']} tiles,"
            f" {tuning['trials']} trials): bPQ {tuning['default_bPQ']:.4f} with the defaults -> "
            f"{tuning['bPQ']:.4f}; frozen into {tuning['path']}"
        )
    log(f"post-processing: {result['postproc']['description']}")
    if result["leak"]:
        warn(f"fold {result['fold']} is the run's training fold (--allow-leak): inflated numbers")
    if not result["event_written"]:
        warn(f"{paths.root.name} is being trained: eval files written, no eval event appended")
    if json_out:
        print_json(result)
        return
    family = f" · {result['family']}" if result.get("family") else ""
    title = (
        f"{result['run']} · {result['split']} (fold {result['fold']}){family} · {checkpoint}"
        f" (epoch {result.get('epoch')}) · {result['tiles']} tiles"
    )
    render_pannuke(result["metrics"], title)
    for name, path in result["files"].items():
        console.print(f"[dim]{name:>11}[/] {escape(path)}", highlight=False)
    if result.get("export"):
        console.print(
            f"[dim]     export[/] {escape(result['export'])} (cellbench eval pannuke --true "
            f"{escape(result['export'])}/true --pred {escape(result['export'])}/pred)",
            highlight=False,
        )
