"""``cellbench quickstart``: the whole workflow on data it generates itself.

By default the nuclei workflow of seeds/001: ``cellbench workflow run demo --fresh`` (the shipped
``demo`` workflow: synth, prepare, check, features, organ head, a family decoder, post-processing
tuning, evaluation, export, predict, each phase gated) and a summary table
(``quickstart_nuclei``); ``--classify`` runs the disciplined classification study instead (its
steps run in this process, one after the other).

Each step is a real cellbench command, printed first as the line a user would type, so the
quickstart doubles as a tour: what it shows is exactly what the commands do. A step that fails
stops the quickstart with that step's exit code (a failed gate: exit 1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule

from cellbench.cli.common import (
    RunsDirOption,
    console,
    err_console,
    log_markup,
    run_store,
)

QUICKSTART_RUN = "quickstart"  # the classification study's run
UNSEEN_SEED = 10_007  # the generated training data uses seed 0


def _run_step(number: int, title: str, args: list[str], root) -> None:
    """Run ``cellbench ARGS`` in this process through ``root``, the CLI's root command."""
    console.print(Rule(f"[bold]{number}. {title}", align="left"))
    console.print(f"[dim]$ cellbench {' '.join(args)}[/]", highlight=False, soft_wrap=True)
    started = time.perf_counter()
    code = root.main(args=args, prog_name="cellbench", standalone_mode=False)
    if code:
        err_console.print(f"[bold red]quickstart stopped at step {number} ({title})[/]")
        raise typer.Exit(int(code))
    console.print(f"[dim]({time.perf_counter() - started:.1f} s)[/]")


def quickstart_command(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the generated datasets go (default: quickstart/ in the workspace's data "
            "folder, else data/quickstart).",
            show_default=False,
        ),
    ] = None,
    runs_dir: RunsDirOption = None,
    classify: Annotated[
        bool,
        typer.Option(
            "--classify", help="Run the image-classification study instead of the nuclei one."
        ),
    ] = False,
    tiles: Annotated[
        int | None,
        typer.Option(
            help="Generated PanNuke tiles per fold (3 folds; default 160, --classify 16).", min=1
        ),
    ] = None,
    tile_size: Annotated[
        int | None,
        typer.Option(help="PanNuke tile side in pixels (default 64, --classify 256).", min=16),
    ] = None,
    images: Annotated[
        int, typer.Option(help="--classify: generated images per class.", min=10)
    ] = 200,
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: the profile's).", min=1)
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Post-processing worker processes (nuclei).", min=1)
    ] = 1,
) -> None:
    """Run the whole workflow on generated data: minutes on a laptop CPU, no download.

    Nuclei (default): generate PanNuke-like folds, convert and validate them, extract features
    with a small ViT and check them, train the organ head, train the digestive decoder, tune
    post-processing on the validation fold, evaluate on the test fold by the PanNuke rules,
    export and re-score, predict new tiles (overlay PNG + QuPath GeoJSON), then print a summary
    of the numbers and sanity checks. --classify: the classification study (class balance,
    overfit a small batch, LR range test, training with baselines, test evaluation, predict).
    Running it again first cleans the quickstart runs (`clean --all`), so retrains start from
    nothing.
    """
    if data_dir is None:
        from cellbench.workspace import workspace_folder

        data_dir = workspace_folder("data", "data") / "quickstart"
    if classify:
        # the root command of the running CLI, taken while its context is current (not an
        # import of cli.app, which imports this module); each step runs through it
        root = ctx.find_root().command
        _classify(data_dir, runs_dir, tiles or 16, tile_size or 256, images, epochs, root)
    else:
        _nuclei(data_dir, runs_dir, tiles or 160, tile_size or 64, epochs, workers)


def _nuclei(
    data_dir: Path,
    runs_dir: Path | None,
    tiles: int,
    tile_size: int,
    epochs: int | None,
    workers: int,
) -> None:
    """``cellbench workflow run demo --fresh`` with the quickstart's sizes, then its summary."""
    from cellbench.cli.quickstart_nuclei import NucleiPlan, demo_sets, summary
    from cellbench.sweep.store import default_sweeps_root
    from cellbench.workflow.runner import WorkflowOptions, run_workflow
    from cellbench.workflow.spec import load_workflow
    from cellbench.workflow.state import default_workflows_root

    plan = NucleiPlan(data_dir, [], tiles, tile_size, epochs, workers)
    spec = load_workflow("demo", demo_sets(plan))
    store = run_store(runs_dir)
    started = time.perf_counter()
    # --fresh: a second quickstart retrains from nothing (its trainings clean their runs first)
    run_workflow(
        spec,
        default_workflows_root(store.root),
        store,
        default_sweeps_root(store.root),
        WorkflowOptions(fresh=True),
        console,
        say=log_markup,
    )
    console.print(Rule("[bold green]quickstart done", align="left"))
    remember_profiles(["organ-demo", "nuclei-demo"])
    summary(plan, runs_dir, time.perf_counter() - started)
    console.print(
        "Next: [bold]cellbench workflow show[/] (phases, gates, times), [bold]cellbench runs "
        "list[/], [bold]cellbench tui[/] (curves, memory, warnings), "
        f"open {plan.predictions}/*.geojson in QuPath, or run the real study with "
        "[bold]cellbench workflow run cellvit-optimus --set pannuke=... --set weights=...[/] "
        "(docs/workflow.md)."
    )


def _classify(
    data_dir: Path,
    runs_dir: Path | None,
    tiles: int,
    tile_size: int,
    images: int,
    epochs: int | None,
    root,
) -> None:
    from cellbench.runs.store import RunStore

    raw, store, shapes = data_dir / "pannuke-raw", data_dir / "pannuke", data_dir / "shapes"
    runs = ["--runs-dir", str(runs_dir)] if runs_dir else []
    store_runs = RunStore(runs_dir)
    started = time.perf_counter()
    steps: list[tuple[str, list[str]]] = [
        (
            "Generate PanNuke-like raw folds",
            [
                "data",
                "synth",
                "--out",
                str(raw),
                "--tiles",
                str(tiles),
                "--size",
                str(tile_size),
                "--force",
            ],
        ),
        (
            "Convert to the canonical store",
            ["data", "prepare", "--pannuke", str(raw), "--out", str(store)],
        ),
        ("Validate the store", ["data", "check", str(store)]),
        (
            "Describe the store",
            ["data", "stats", str(store), "--plot", str(data_dir / "pannuke-stats.png")],
        ),
        (
            "Generate a classification dataset",
            # --force only ever replaces a generated shapes dataset, so other sizes can follow
            [
                "data",
                "synth",
                "--kind",
                "shapes",
                "--out",
                str(shapes),
                "--tiles",
                str(images),
                "--force",
            ],
        ),
        ("Class balance", ["data", "stats", str(shapes)]),
    ]
    profile = ["--profile", "demo", "--data", str(shapes), *runs]
    steps.append(("Overfit a small batch", ["train", *profile, "--overfit-small", "16"]))
    if store_runs.find(QUICKSTART_RUN) is not None:
        # a second quickstart retrains from nothing: the "run 2" flow of clean + train
        steps.append(
            (
                "Clean the previous quickstart run",
                ["clean", "--run", QUICKSTART_RUN, "--all", "--yes", *runs],
            )
        )
    steps.append(("LR range test", ["train", *profile, "--run", QUICKSTART_RUN, "--lr-find"]))
    train = ["train", *profile, "--run", QUICKSTART_RUN]
    if epochs is not None:
        train += ["--epochs", str(epochs)]
    steps += [
        ("Train (baselines, initial-loss check, checkpoints)", train),
        ("Evaluate on the test split", ["eval", "--run", QUICKSTART_RUN, "--split", "test", *runs]),
    ]
    for number, (title, args) in enumerate(steps, start=1):
        _run_step(number, title, args, root)
    examples = _unseen_examples(data_dir / "examples")
    _run_step(
        len(steps) + 1,
        "Predict unseen images",
        ["predict", "--run", QUICKSTART_RUN, *runs, *examples],
        root,
    )
    console.print(Rule("[bold green]quickstart done", align="left"))
    remember_profiles(["demo"])
    console.print(
        f"Finished in {time.perf_counter() - started:.0f} s. Next: [bold]cellbench runs list[/], "
        f"[bold]cellbench tui --run {QUICKSTART_RUN}[/] (curves, memory, warnings), or train on "
        "your own data with "
        f"[bold]cellbench train --data DIR --model NAME[/]."
    )


def remember_profiles(profiles: list[str]) -> None:
    """Make the profiles the quickstart trained with the workspace's defaults for their tasks
    (where none is set): `cellbench train --family digestive` then needs no --profile. They
    are the CPU demo ones whatever the machine: they fit the quickstart's vit-demo features."""
    from cellbench.cli.common import log
    from cellbench.config import load_config
    from cellbench.workspace.defaults import record_default

    for name in profiles:
        task = load_config(profile=name).task
        record_default(f"profiles.{task}", name, say=log, is_path=False)


def _unseen_examples(folder: Path) -> list[str]:
    """One new image per class, drawn with a seed the training data never used."""
    import numpy as np

    from cellbench.data.classify.shapes import DEFAULT_CLASSES, draw_shape

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, kind in enumerate(DEFAULT_CLASSES):
        path = folder / f"{kind}.png"
        draw_shape(kind, 32, np.random.default_rng([UNSEEN_SEED, label, 0])).save(path)
        paths.append(str(path))
    return paths
