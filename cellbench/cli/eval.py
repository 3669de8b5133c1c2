"""``cellbench eval --run RUN``: metrics of a trained run on its val or test split;
``cellbench eval pannuke --true DIR --pred DIR``: nuclei metrics of PanNuke-format predictions.

A sub-app whose callback does the run evaluation, so ``cellbench eval --run 2`` works, with the
``pannuke`` sub-command next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellbench.cli.common import (
    JsonOption,
    MachineOption,
    OverwriteOption,
    RunsDirOption,
    console,
    log,
    print_json,
    run_store,
    stderr_progress,
    warn,
)
from cellbench.cli.lists import list_options, parse_folds
from cellbench.cli.run_inputs import check_inputs, run_task
from cellbench.errors import BadInputError, UsageError

app = typer.Typer(
    help="Evaluate a trained run (accuracy, macro-F1, per class, confusion matrix), or score "
    "PanNuke-format nuclei predictions with 'eval pannuke'.",
    invoke_without_command=True,
)


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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Evaluate although the run's feature store or data changed since it trained "
            "(the differences are written into the eval output).",
        ),
    ] = False,
    machine: MachineOption = None,
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
    if fold is not None and _given(ctx, "split"):
        # `--split test --fold 2` used to evaluate fold 2 as val without a word
        raise UsageError(
            f"--split {split} and --fold {fold} contradict each other: --fold evaluates that fold "
            "whatever the split; give one of them"
        )
    if machine is not None:
        from cellbench.machines import machine_batch

        batch_size = machine_batch(machine, batch_size, "eval", default=None)
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

    from cellbench.tasks import get_task
    from cellbench.tasks.base import EvalRequest  # torch: only when evaluating

    forced = check_inputs(paths, force, "eval")  # before any model or data is read
    task = get_task(run_task(paths))
    request = EvalRequest(
        split=split,
        checkpoint=checkpoint,
        batch_size=batch_size,
        device=device,
        tune_postproc=tune_postproc,
        allow_leak=allow_leak,
        export=export,
        workers=workers,
        fold=fold,
    )
    refused = [name for name in request.task_options() if name not in task.eval_options]
    if refused:
        flag = "--" + refused[0].replace("_", "-")
        raise UsageError(f"{flag} is not an option of {task.name} runs; {paths.root.name} is one")

    where = f"fold {fold}" if fold is not None else split
    log(f"evaluating {paths.root.name} on {where} with {checkpoint}.pt ...")
    # progress on stderr, drawn only on a terminal: --json output and logs stay clean
    with stderr_progress() as progress:
        bars: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total or None)
            progress.update(bars[stage], completed=done, total=total or None)

        result = task.evaluate(paths, request, progress=report)
    for level, message in task.eval_messages(result):
        (warn if level == "warn" else log)(message)
    if not result["event_written"]:
        warn(f"{paths.root.name} is being trained: eval files written, no eval event appended")
    record_forced(result, forced)
    if json_out:
        print_json(result)
    else:
        task.render_eval(result, console)


def _given(ctx: typer.Context, name: str) -> bool:
    # by name: typer ships its own copy of click, whose ParameterSource is another enum
    return getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"


def record_forced(result: dict, forced: list[str]) -> None:
    """``eval --force`` on changed inputs: the differences go into the result and into each
    JSON file the evaluation wrote (``forced_inputs``), so the numbers carry their caveat."""
    if not forced:
        return
    import json

    from cellbench.atomic import atomic_write_json

    result["forced_inputs"] = forced
    for path in result.get("files", {}).values():
        if str(path).endswith(".json"):
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                atomic_write_json(path, {**data, "forced_inputs": forced})


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command("pannuke", cls=list_options("--folds"))
def eval_pannuke(
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
            help="Folds to score when --true and --pred are roots, e.g. --folds 3, 1 2 3 or 1,2,3 "
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
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Score PanNuke-format nuclei predictions: bPQ, mPQ, mPQ+, Dice, AJI, per type, per tissue."""

    from cellbench import outputs
    from cellbench.data.nuclei_labels import check_pair, open_labels
    from cellbench.metrics.nuclei_folds import combine_folds, score_folds
    from cellbench.metrics.nuclei_report import tile_rows, write_tile_csv
    from cellbench.metrics.tile_pool import TilePool
    from cellbench.tasks.nuclei.render import render_pannuke

    selected = parse_folds(folds)
    true_folds = open_labels(true, selected)
    pred_folds = open_labels(pred, selected)
    pairs = _pair_folds(true, pred, true_folds, pred_folds)
    for t, p in pairs.values():  # refuse any mismatch before scoring anything
        check_pair(t, p)
    if csv_path is not None and csv_path.is_dir():
        raise UsageError(f"--csv {csv_path}: is a folder; name a file")
    if csv_path is not None:  # before scoring: a refused path costs nothing
        outputs.check(csv_path, overwrite=overwrite, option="--csv")

    scored = {}
    # one pool of scoring processes for every fold of the command
    with stderr_progress() as progress, TilePool(workers) as pool:
        for key, (t, p) in pairs.items():
            task = progress.add_task(f"score fold {key}" if key else "score", total=len(t))
            scored[key] = score_folds(
                t,
                p,
                workers=workers,
                chunk=chunk,
                progress=lambda done, total, task=task: progress.update(task, completed=done),
                pool=pool,
            )
    summary = combine_folds(scored)
    if csv_path is not None:
        write_tile_csv(csv_path, tile_rows(scored))
        outputs.record(csv_path)
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
        render_pannuke(fold.result.to_dict(), title, console)


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
