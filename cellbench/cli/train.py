"""``cellbench train``: train, resume or retrain a run; find an lr; overfit a few examples.

Heavy imports (torch, timm) happen inside the command body: ``cellbench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cellbench.cli.common import (
    JsonOption,
    MachineOption,
    RunsDirOption,
    command_arguments,
    err_console,
    log,
    log_markup,
    print_json,
)
from cellbench.errors import CheckFailed, ExitCode, UsageError


def _trains_per_family(task: str) -> bool:
    """Whether ``--task`` trains one model per organ family (the task says: ``per_family``)."""
    from cellbench.tasks import task_class

    return bool(task_class(task).per_family)


def train_command(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Profile name or YAML file.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config YAML (e.g. a run's config.yaml).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Override a config key: --set train.lr=3e-4 (repeatable)."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Task: classify, organ or nuclei. Shorthand for --set task=."),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            "--family",
            help="Organ family decoder (glandular, digestive, urologic, respiratory, epidermal): "
            "shorthand for --set task=nuclei --set data.family=F.",
        ),
    ] = None,
    online_features: Annotated[
        bool,
        typer.Option(
            "--online-features",
            help="Run the frozen backbone (nuclei.backbone) on each batch instead of reading "
            "the feature store, so image augmentations reach the tokens.",
        ),
    ] = False,
    data: Annotated[
        str | None, typer.Option("--data", help="Dataset folder. Shorthand for --set data.path=.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="simple_cnn, inception_multibranch or any timm model name."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Feature store STORE/features/TAG (organ and nuclei tasks). Shorthand for "
            "data.features.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Train on a stale or failed feature store anyway (data.features_force); with "
            "--resume, go on although the run's feature store or data changed since it started.",
        ),
    ] = False,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Shorthand for --set train.epochs=.", min=1)
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="Local .pth/.safetensors to start from (model.weights)."),
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Run name (new) or id/name/folder (existing).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue RUN from checkpoints/last.pt.")
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Delete RUN's outputs and start it again."),
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="Start from the best.pt model weights of another run."),
    ] = None,
    lr_find: Annotated[
        bool,
        typer.Option("--lr-find", help="Run an LR range test instead of training (lr_find.*)."),
    ] = False,
    overfit_small: Annotated[
        int | None,
        typer.Option(
            "--overfit-small",
            metavar="N",
            min=1,
            help="Check that N examples can be memorised (exit 0 pass, 1 fail).",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train with N processes on this machine under torchrun (one per GPU; gloo "
            "processes on CPU). Several machines: torchrun ... -m cellbench train (docs/scale.md).",
        ),
    ] = 1,
    machine: MachineOption = None,
    runs_dir: RunsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    # help text: TRAIN_HELP below (one line per paragraph renders best in Rich help)
    if lr_find and overfit_small is not None:
        raise UsageError("--lr-find and --overfit-small are separate checks: use one at a time")
    if nproc > 1:
        if lr_find or overfit_small is not None:
            raise UsageError("--nproc trains; --lr-find and --overfit-small run in one process")
        from cellbench.engine.launch import launch

        code = launch(nproc, command_arguments(ctx, drop=("nproc",)))
        if code:
            raise typer.Exit(code)
        return
    sets = list(overrides or [])
    if family is not None:
        if task is not None and not _trains_per_family(task):
            raise UsageError(f"--family trains a nuclei decoder; it excludes --task {task}")
        # --set and the profile's own keys still refine them (they come later)
        sets[:0] = ["task=nuclei", "model.name=nuclei_decoder", f"data.family={family}"]
    if online_features:
        sets.append("nuclei.online_features=true")
    for key, value in (
        ("task", task),
        ("data.path", data),
        ("model.name", model),
        ("train.epochs", epochs),
        ("model.weights", weights),
        ("data.features", features),
        # with --resume, --force lets the run go on although its inputs changed (runs.inputs)
        ("data.features_force", True if force and not resume else None),
    ):
        if value is not None:
            sets.append(f"{key}={value}")

    if not (resume or fresh):  # a run's saved config already names its profile and store
        profile = workspace_defaults(profile, config, sets)

    from cellbench.engine.report import RichReporter
    from cellbench.engine.session import TrainRequest

    request = TrainRequest(
        profile=profile,
        config_file=str(config) if config else None,
        overrides=sets,
        run=run,
        resume=resume,
        fresh=fresh,
        init_from=init_from,
        force_inputs=force,
        runs_dir=runs_dir,
        machine=machine,
    )
    reporter = RichReporter(err_console, show_progress=err_console.is_terminal and not json_output)
    if lr_find:
        _lr_find(request, reporter, json_output)
    elif overfit_small is not None:
        _overfit(request, overfit_small, reporter, json_output)
    else:
        _train(request, reporter, json_output)


TRAIN_HELP = (
    "Train a model. The run folder gets config.yaml, events.jsonl, history.csv, "
    "checkpoints/last.pt, checkpoints/best.pt and metrics.json.\n\n"
    "A new run is named by --run or <model>-<task>. An existing run needs --resume (continue "
    "from last.pt with its saved config) or --fresh (delete its checkpoints, history, metrics and "
    "eval, then start from new weights; options override its saved config); otherwise train "
    "exits 4. --lr-find and --overfit-small check the pipeline instead of training.\n\n"
    "Exit codes: 0 completed · 1 a check failed (non-finite loss, overfit-small failed) · "
    "2 bad usage · 3 bad data/file · 4 run exists or is locked · 130 interrupted by Ctrl-C "
    "(143 by SIGTERM, 129 by SIGHUP: the run stops after the current step, keeps its last "
    "completed epoch and resumes with --resume)."
)
train_command.__doc__ = TRAIN_HELP


def workspace_defaults(profile: str | None, config_file: Path | None, sets: list[str]):
    """Fill what the command line left out from the workspace (docs/workspace.md): the task's
    default profile when neither --profile nor --config is given, and the default feature
    store (appended to ``sets``) when the task needs one and none was given. Each is said on
    stderr. Returns the profile."""
    from cellbench.workspace import current

    ws = current()
    if ws is None:
        return profile
    from cellbench.config import load_config
    from cellbench.workspace.defaults import choose_feature_store, default_profile

    if profile is None and config_file is None:
        task = load_config(overrides=sets).task
        chosen = default_profile(ws, task)
        if chosen is not None:
            profile = chosen
            log(f"profile: {chosen} (workspace default for {task})")
    resolved = load_config(profile, config_file, sets)
    if resolved.data.features is None:
        from cellbench.tasks import get_task

        if get_task(resolved.task).needs_feature_store(resolved):
            store = choose_feature_store(ws, allow_stale=resolved.data.features_force)
            if store is not None:
                # absolute: the run's saved config must hold from any folder (eval, predict)
                sets.append(f"data.features={store.path.resolve()}")
                log(f"features: {store.shown} ({store.why})")
    return profile


def _train(request, reporter, json_output: bool) -> None:
    from cellbench.engine.session import train

    paths, result = train(request, reporter)
    from cellbench.engine.distributed import torchrun_env

    if not torchrun_env().is_main:  # rank 0 speaks for the run; the others only end with it
        _exit_like(result)
        return
    best = result.best or {}
    if best.get("value") is not None:
        best_text = f"best {best['metric']} {best['value']:.4g} (epoch {best['epoch']})"
    else:
        best_text = "no best epoch"
    # the reason may quote a library's message with brackets (gloo: "[/.../pair.cc:545]"): text,
    # not markup
    log_markup(
        f"[bold]{result.status}[/] {escape(f'{paths.root} · {result.reason} · {best_text}')}"
    )
    if json_output:
        print_json(result.metrics)
    if result.status == "failed":
        raise CheckFailed(f"{paths.root}: {result.reason}")
    _exit_like(result)


def _exit_like(result) -> None:
    """The exit status of a run that ended: 1 failed, 130/143/129 interrupted, else 0."""
    if result.status == "failed":
        raise typer.Exit(int(ExitCode.CHECK_FAILED))
    if result.status == "interrupted":
        from cellbench.signals import exit_code

        # 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP: what a shell reports
        raise typer.Exit(exit_code(result.signum) if result.signum else int(ExitCode.INTERRUPTED))


def _lr_find(request, reporter, json_output: bool) -> None:
    from cellbench.engine.session import lr_find

    paths, result = lr_find(request, reporter)
    summary = {"run": paths.root.name, **result.summary()}
    if result.suggestion is None:
        log_markup(
            f"[yellow]lr-find:[/] no suggestion ({escape(str(result.reason))}); see "
            f"{escape(str(paths.root / 'lr_find.png'))}"
        )
    else:
        log_markup(
            f"[bold]suggested lr {result.suggestion:.3g}[/] (loss lowest at "
            f"{result.min_loss_lr:.3g}; {escape(str(result.reason))}) · "
            f"{escape(str(paths.root / 'lr_find.png'))}"
        )
    if json_output:
        print_json(summary)


def _overfit(request, n: int, reporter, json_output: bool) -> None:
    from cellbench.engine.session import overfit

    paths, result = overfit(request, n, reporter)
    if json_output:
        print_json({"run": paths.root.name, **result.to_dict()})
    if not result.passed:
        raise CheckFailed(
            f"overfit-small failed: loss {result.final_loss:.4g} still above "
            f"{result.threshold:g} after {result.steps} steps on {result.examples} examples "
            f"({paths.root})"
        )
