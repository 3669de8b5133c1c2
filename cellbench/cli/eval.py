"""``cellbench eval --run RUN``: metrics of a trained run on its val or test split.

A sub-app whose callback does the run evaluation, so ``cellbench eval --run 2`` works and
sub-commands (``cellbench eval pannuke ...``) can be added next to it later.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    RunsDirOption,
    console,
    err_console,
    log,
    print_json,
    run_store,
    warn,
)
from cellbench.errors import UsageError

app = typer.Typer(
    help="Evaluate a trained run: accuracy, macro-F1, per-class report, confusion matrix.",
    invoke_without_command=True,
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(result: dict) -> None:
    """Metrics table, per-class table and the files written, for people."""
    epoch = result.get("epoch")
    title = (
        f"{result['run']} · {result['split']} · {result['checkpoint']}"
        f"{f' (epoch {epoch})' if epoch is not None else ''}{' · EMA' if result.get('ema') else ''}"
        f" · {result['num_samples']} samples"
    )
    console.print(f"[bold]{title}[/]", highlight=False)
    summary = Table()
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        summary.add_row(key, _fmt(value))
    console.print(summary)

    per_class = Table(title="Per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for row in result["per_class"]:
        style = "red" if row["support"] and row["f1"] < 0.5 else ""
        per_class.add_row(
            row["class"],
            _fmt(row["precision"]),
            _fmt(row["recall"]),
            f"[{style}]{_fmt(row['f1'])}[/]" if style else _fmt(row["f1"]),
            str(row["support"]),
        )
    console.print(per_class)
    for name, path in result["files"].items():
        console.print(f"[dim]{name:>11}[/] {path}", highlight=False)


@app.callback()
def eval_run(
    ctx: typer.Context,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "-r",
            help="Run id (2), name (digestive) or folder (0002-digestive); default: the latest.",
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate: val or test.")] = "val",
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="Checkpoint to evaluate: best or last.")
    ] = "best",
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help="Batch size (default: the run's train.batch_size)."
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="cpu, cuda or auto (default: the run's train.device)."),
    ] = None,
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Evaluate a run on its val or test split and write the results to runs/<run>/eval/."""
    if ctx.invoked_subcommand is not None:
        return
    if split not in ("val", "test"):
        raise UsageError(f"--split {split}: expected val or test")
    if checkpoint not in ("best", "last"):
        raise UsageError(f"--checkpoint {checkpoint}: expected best or last")
    store = run_store(runs_dir)
    if run is None:
        # DESIGN.md's `eval [--run RUN]`: without --run, the latest run (said on stderr)
        runs = store.runs()
        if not runs:
            raise UsageError(f"no runs in {store.root}/ to evaluate; give --run RUN")
        paths = runs[-1]
        log(f"no --run given: evaluating the latest run, {paths.root.name}")
    else:
        paths = store.resolve(run)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cellbench.engine.evaluate import evaluate_run  # torch: only when evaluating

    log(f"evaluating {paths.root.name} on {split} with {checkpoint}.pt ...")
    # progress on stderr, drawn only on a terminal: --json output and logs stay clean
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(f"eval {split}", total=None)
        result = evaluate_run(
            paths,
            split=split,
            checkpoint=checkpoint,
            batch_size=batch_size,
            device=device,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for message in result["warnings"]:
        warn(message)
    if not result["event_written"]:
        warn(f"{paths.root.name} is being trained: eval files written, no eval event appended")
    if json_out:
        print_json(result)
    else:
        render(result)
