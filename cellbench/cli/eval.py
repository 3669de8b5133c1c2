"""``cellbench eval --run RUN``: metrics of a trained run on its val or test split;
``cellbench eval pannuke --true DIR --pred DIR``: nuclei metrics of PanNuke-format predictions.

A sub-app whose callback does the run evaluation, so ``cellbench eval --run 2`` works, with the
``pannuke`` sub-command next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    RunsDirOption,
    console,
    log,
    print_json,
    run_store,
    stderr_progress,
    warn,
)
from cellbench.errors import BadInputError, UsageError

app = typer.Typer(
    help="Evaluate a trained run (accuracy, macro-F1, per class, confusion matrix), or score "
    "PanNuke-format nuclei predictions with 'eval pannuke'.",
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
            help="Run id (2), name, folder (0002-digestive) or path; default: the latest.",
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
    tune_postproc: Annotated[
        bool,
        typer.Option(
            "--tune-postproc",
            help="Nuclei runs: first search the post-processing parameters for the best bPQ "
            "on the validation fold and freeze them into the run (postproc.json).",
        ),
    ] = False,
    allow_leak: Annotated[
        bool,
        typer.Option(
            "--allow-leak", help="Nuclei runs: evaluate even on the fold the run trained on."
        ),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Nuclei runs: write the predictions (and the same tiles' ground truth) in "
            "PanNuke format: eval pannuke --true DIR/true --pred DIR/pred re-scores them.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Nuclei runs: post-processing worker processes."),
    ] = 1,
    fold: Annotated[
        int | None,
        typer.Option(
            "--fold",
            help="Nuclei runs: evaluate this fold of the store instead of --split's (the run's "
            "training fold needs --allow-leak).",
        ),
    ] = None,
    runs_dir: RunsDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Evaluate a run on its val or test split and write the results to runs/<run>/eval/.

    Nuclei runs: post-processing with the run's frozen parameters, then bPQ/mPQ by the PanNuke
    rules, image averages, mPQ+, Dice, AJI, per type and per tissue."""
    if ctx.invoked_subcommand is not None:
        # `eval --run 2 pannuke ...` used to score the two folders and silently drop --run:
        # options of the run evaluation given before a subcommand are refused, not ignored
        # (by name: typer ships its own copy of click, whose ParameterSource is another enum)
        given = [
            param.opts[0]
            for param in ctx.command.params
            if param.opts
            and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE"
        ]
        if given:
            raise UsageError(
                f"{given[0]} is an option of `eval` (a run's evaluation), not of "
                f"`eval {ctx.invoked_subcommand}`; give it after the subcommand if it has one "
                f"(see `cellbench eval {ctx.invoked_subcommand} --help`)"
            )
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

    from cellbench.cli.predict import _run_task

    if _run_task(paths) == "nuclei":
        from cellbench.cli.eval_nuclei import eval_nuclei_run

        eval_nuclei_run(
            paths, split, checkpoint, batch_size, device, tune_postproc, allow_leak, export,
            workers, json_out, fold,
        )  # fmt: skip
        return
    nuclei_only = {
        "--tune-postproc": tune_postproc,
        "--allow-leak": allow_leak,
        "--export": export,
        "--fold": fold,
    }
    used = [name for name, value in nuclei_only.items() if value]
    if used:
        raise UsageError(f"{used[0]} is for nuclei runs; {paths.root.name} is not one")

    from cellbench.tasks.classify.evaluation import evaluate_run  # torch: only when evaluating

    log(f"evaluating {paths.root.name} on {split} with {checkpoint}.pt ...")
    # progress on stderr, drawn only on a terminal: --json output and logs stay clean
    with stderr_progress() as progress:
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


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_pannuke(summary: dict, title: str) -> None:
    """Headline metrics, per type and per tissue, for people."""
    console.print(f"[bold]{escape(title)}[/]", highlight=False)
    head = Table()
    head.add_column("metric", style="bold")
    head.add_column("value", justify="right")
    head.add_column("averaging")
    rows = (
        ("bPQ", "bPQ", "per tissue, then over tissues (PanNuke)"),
        ("mPQ", "mPQ", "per tissue, then over tissues (PanNuke)"),
        ("bPQ (image avg)", "bPQ_image_avg", "over images (CellViT's printout)"),
        ("mPQ (image avg)", "mPQ_image_avg", "over images (CellViT's printout)"),
        ("mPQ+", "mPQ_plus", "TP/FP/FN pooled over the set per type (CoNIC)"),
        ("bDQ", "bDQ", "over images"),
        ("bSQ", "bSQ", "over images"),
        ("Dice", "dice", "binary, over images"),
        ("AJI", "aji", "over images"),
        ("AJI+", "aji_plus", "over images"),
    )
    for label, key, how in rows:
        head.add_row(label, _score(summary.get(key)), f"[dim]{how}[/]")
    console.print(head)

    per_type = Table(title="Per type")
    for column in ("type", "PQ", "PQ+", "TP", "FP", "FN", "images"):
        per_type.add_column(column, justify="left" if column == "type" else "right")
    for name, row in summary["per_type"].items():
        per_type.add_row(
            name,
            _score(row["PQ"]),
            _score(row["PQ_plus"]),
            str(row["tp"]),
            str(row["fp"]),
            str(row["fn"]),
            str(row["images"]),
        )
    console.print(per_type)

    per_tissue = Table(title="Per tissue")
    for column in ("tissue", "tiles", "bPQ", "mPQ"):
        per_tissue.add_column(column, justify="left" if column == "tissue" else "right")
    for name, row in summary["per_tissue"].items():
        per_tissue.add_row(name, str(row["tiles"]), _score(row["bPQ"]), _score(row["mPQ"]))
    console.print(per_tissue)
    console.print(
        f"[dim]{summary['tiles']} tiles · {summary['true_nuclei']} true nuclei · "
        f"{summary['pred_nuclei']} predicted · match at IoU > {summary['iou_threshold']} · "
        "'-' = not scored (no nucleus of it in the ground truth)[/]",
        highlight=False,
    )


@app.command(
    "pannuke", context_settings={"allow_extra_args": True, "ignore_unknown_options": False}
)
def eval_pannuke(
    ctx: typer.Context,
    true: Annotated[
        Path,
        typer.Option(
            "--true",
            help="Ground truth: a fold folder with masks.npy + types.npy (flat or 'Fold k'), "
            "a root of such folds, or a canonical store (root or fold<k>).",
        ),
    ],
    pred: Annotated[
        Path,
        typer.Option(
            "--pred", help="Predictions in the same form, tiles in the ground truth's order."
        ),
    ],
    folds: Annotated[
        list[str] | None,
        typer.Option(
            "--folds",
            help="Folds to score when --true and --pred are roots, e.g. --folds 3 or 1,2,3 "
            "(default: every fold of --true).",
        ),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write one row per tile (bPQ, mPQ, PQ per type, ...)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes scoring chunks of tiles.")
    ] = 1,
    chunk: Annotated[
        int, typer.Option("--chunk", min=1, help="Tiles per chunk (bounds memory).")
    ] = 32,
    json_out: JsonOption = False,
) -> None:
    """Score PanNuke-format nuclei predictions: bPQ, mPQ, mPQ+, Dice, AJI, per type, per tissue."""

    from cellbench.cli.data import _parse_folds
    from cellbench.data.nuclei_labels import check_pair, open_labels
    from cellbench.metrics.nuclei_folds import combine_folds, score_folds
    from cellbench.metrics.nuclei_report import tile_rows, write_tile_csv

    selected = _parse_folds(folds, ctx.args)
    true_folds = open_labels(true, selected)
    pred_folds = open_labels(pred, selected)
    pairs = _pair_folds(true, pred, true_folds, pred_folds)
    for t, p in pairs.values():  # refuse any mismatch before scoring anything
        check_pair(t, p)
    if csv_path is not None and csv_path.is_dir():
        raise UsageError(f"--csv {csv_path}: is a folder; name a file")

    scored = {}
    with stderr_progress() as progress:
        for key, (t, p) in pairs.items():
            task = progress.add_task(f"score fold {key}" if key else "score", total=len(t))
            scored[key] = score_folds(
                t,
                p,
                workers=workers,
                chunk=chunk,
                progress=lambda done, total, task=task: progress.update(task, completed=done),
            )
    summary = combine_folds(scored)
    if csv_path is not None:
        write_tile_csv(csv_path, tile_rows(scored))
        log(f"per-tile scores written to {csv_path}")
    if json_out:
        print_json({"true": str(true), "pred": str(pred), **summary})
        return
    if len(scored) > 1:
        console.print(
            f"[bold]folds {', '.join(map(str, scored))}[/]: bPQ {_score(summary['bPQ'])} · "
            f"mPQ {_score(summary['mPQ'])} (mean over folds; each fold below)",
            highlight=False,
        )
    for fold in scored.values():
        title = f"{fold.pred.folder} scored against {fold.true.folder}"
        render_pannuke(fold.result.to_dict(), title)


def _pair_folds(true: Path, pred: Path, true_folds: dict, pred_folds: dict) -> dict:
    """{fold: (true fold, pred fold)}; a single fold folder pairs with the one fold opposite."""
    if None in true_folds and None in pred_folds:
        return {None: (true_folds[None], pred_folds[None])}
    if None in true_folds or None in pred_folds:
        single, many, single_is_true = (
            (true_folds[None], pred_folds, True)
            if None in true_folds
            else (pred_folds[None], true_folds, False)
        )
        if len(many) != 1:
            other = pred if single_is_true else true
            raise UsageError(
                f"{other} holds folds {', '.join(map(str, many))}: name one fold folder, or give "
                "--true and --pred as roots with --folds"
            )
        key, fold = next(iter(many.items()))
        return {key: (single, fold) if single_is_true else (fold, single)}
    missing = [k for k in true_folds if k not in pred_folds]
    if missing:
        raise BadInputError(f"{pred}: fold {missing[0]} of {true} has no predictions")
    return {k: (true_folds[k], pred_folds[k]) for k in true_folds}
