"""From a ``train`` request to a run folder: new run, ``--resume``, ``--fresh``, ``--init-from``.

Rules (DESIGN.md "Run directory"):

- a new run gets ``--run NAME`` or ``<model>-<task>`` (``-2``, ``-3``... when that name is taken);
- an existing run that has trained (checkpoints, history, metrics or a ``run_start``) is only
  touched with ``--resume`` (continue from ``last.pt`` with its saved config; config options are
  refused) or ``--fresh`` (delete its checkpoints, history, metrics, eval and LR-finder outputs,
  release memory, start from new weights; its saved config is the base that command-line options
  override). ``--fresh`` builds the new data and model before it deletes anything: a bad path or
  option exits with the old run intact. Anything else exits 4. A run folder that holds only
  ``lr_find`` outputs has not trained and is trained into directly, its saved config as the base;
- ``--init-from RUN`` is the only way weights cross runs: the model weights of RUN's ``best.pt``
  (a classifier of another class count is left new, any other mismatch refused; the rule of
  ``cellbench.models.weights``), recorded in ``run_start.init_from``;
- the run lock is held from the first change to the folder until ``run_end``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.config import Config, config_from_dict, load_config, read_yaml
from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.runs import inputs
from cellbench.runs.events import EventWriter, read_events
from cellbench.runs.layout import NAME_RE, RUN_DIR_RE, RunPaths
from cellbench.runs.lock import RunLock
from cellbench.runs.store import RunStore, is_path_ref


@dataclass
class TrainRequest:
    profile: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    run: str | None = None
    resume: bool = False
    fresh: bool = False
    init_from: str | None = None
    runs_dir: str | Path | None = None
    force_inputs: bool = False  # --resume although the run's inputs changed (runs.inputs)
    machine: str | None = None  # a machine profile name, or "auto" (cellbench.machines)
    notes: list[str] = field(default_factory=list)  # how the config was fitted, said at start

    @property
    def has_config_options(self) -> bool:
        return bool(self.profile or self.config_file or self.overrides or self.machine)


def has_trained(run: RunPaths) -> bool:
    """True when ``run`` holds outputs of a training attempt."""
    if any(
        p.exists() for p in (run.last_checkpoint, run.best_checkpoint, run.history, run.metrics)
    ):
        return True
    return bool(read_events(run.events, kind="run_start"))


def create_run(store: RunStore, request: TrainRequest, default: str) -> RunPaths:
    """The new run folder: ``--run NAME`` as given, else ``default`` made unique (``-2``...)
    under the store's id lock, so trials started together never race for one name."""
    if request.run:
        return store.create(request.run)
    return store.create(default, unique=True)


def default_name(config: Config, suffix: str = "") -> str:
    """A new run's name: its task's ``run_name`` (``<model>-<task>`` unless the task says)."""
    from cellbench.tasks import get_task

    return f"{get_task(config.task).run_name(config)}{suffix}"


def saved_config(run: RunPaths) -> dict[str, Any] | None:
    return read_yaml(run.config) if run.config.is_file() else None


def resolve_config(request: TrainRequest, existing: RunPaths | None) -> Config:
    """The config of this training, from the saved one and/or the command line."""
    base = saved_config(existing) if existing is not None else None
    if request.resume:
        if request.has_config_options:
            raise UsageError(
                "--resume continues the run with its saved config; to change it, use --fresh"
            )
        if base is None:
            raise BadInputError(f"{existing.config}: no saved config to resume with")
        return config_from_dict(base, source=str(existing.config))
    config = load_config(request.profile, request.config_file, request.overrides, base=base)
    if request.machine:
        config = fit_machine(request, base, config)
    anchor_local_paths(config)
    return config


def fit_machine(request: TrainRequest, base: dict[str, Any] | None, plain: Config) -> Config:
    """The config with the machine profile layered under the task profile, and the study's
    effective batch (``plain``'s batch x accumulation) split into the machine's micro-batch x
    accumulation x processes (``cellbench.machines``)."""
    from cellbench import machines
    from cellbench.engine.distributed import torchrun_env

    machine = machines.resolve(request.machine)
    config = load_config(
        request.profile,
        request.config_file,
        request.overrides,
        base=base,
        machine=machine.config_layer(),
        machine_source=f"machine profile {machine.name}",
    )
    config.train.machine = machine.name
    world = torchrun_env().world_size
    t = plain.train
    effective = t.batch_size * t.grad_accum_steps
    if machines.explicit_batch(request.overrides):
        request.notes.append(f"machine {machine.name}: batch and accumulation as --set gives them")
        return config
    fitted = machines.fit_batch(effective, world, machine.batch_size)
    if fitted is None:
        request.notes.append(
            f"machine {machine.name}: the effective batch {effective} does not split over {world} "
            f"processes; batch {t.batch_size} x accumulation {t.grad_accum_steps} per process"
        )
        return config
    config.train.batch_size, config.train.grad_accum_steps = fitted
    request.notes.append(
        f"machine {machine.name}: batch {fitted[0]} x accumulation {fitted[1]} x {world} "
        f"process(es) keeps the effective batch {effective}"
    )
    return config


def anchor_local_paths(config: Config) -> None:
    """Record local data and weights paths as absolute, so the saved config re-runs, evaluates
    and predicts the same from any working directory."""
    from cellbench.data.classify.sources import HF_HUB, HF_IMAGEFOLDER

    path = config.data.path
    if path.startswith(HF_IMAGEFOLDER):
        folder = path[len(HF_IMAGEFOLDER) :]
        config.data.path = HF_IMAGEFOLDER + str(Path(folder).expanduser().resolve())
    elif not path.startswith(HF_HUB):
        config.data.path = str(Path(path).expanduser().resolve())
    if config.model.weights:
        config.model.weights = str(Path(config.model.weights).expanduser().resolve())
    if config.data.features:
        config.data.features = str(Path(config.data.features).expanduser().resolve())


def find_existing(store: RunStore, request: TrainRequest) -> RunPaths | None:
    if request.run is None:
        if request.resume or request.fresh:
            raise UsageError("--resume and --fresh need --run RUN (an id, name, folder or path)")
        return None
    existing = store.find(request.run)
    if existing is None and (
        request.resume
        or request.fresh
        or request.run.isdigit()
        or RUN_DIR_RE.fullmatch(request.run)
        or is_path_ref(request.run)
    ):
        # --resume/--fresh name a run that must exist: a typo must not start a new run
        store.resolve(request.run)  # raises "no run" with a did-you-mean (exit 3)
    if existing is None and not NAME_RE.fullmatch(request.run):
        # checked now, not when the folder is made after minutes of data and model building
        raise UsageError(
            f"run name {request.run!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return existing


def check_conflict(existing: RunPaths, request: TrainRequest) -> None:
    if request.resume and request.fresh:
        raise UsageError("--resume and --fresh exclude each other")
    if request.resume:
        if request.init_from:
            raise UsageError("--resume continues the run's own weights; --init-from needs --fresh")
        if not existing.last_checkpoint.is_file():
            raise BadInputError(
                f"{existing.last_checkpoint}: nothing to resume (no completed epoch); "
                "use --fresh to start over"
            )
        return
    if not request.fresh and has_trained(existing):
        raise RunConflict(
            f"{existing.root}: run exists; use --resume to continue it or --fresh to delete its "
            "checkpoints and history and start over"
        )


def load_init_weights(store: RunStore, ref: str) -> tuple[str, dict[str, Any]]:
    """``--init-from RUN``: that run's best.pt model weights (and the run's folder name)."""
    from cellbench.engine.checkpoint import load_checkpoint

    source = store.resolve(ref)
    if not source.best_checkpoint.is_file():
        raise BadInputError(f"{source.best_checkpoint}: --init-from needs a run with a best.pt")
    state = load_checkpoint(source.best_checkpoint)
    return source.root.name, state["model"]


def fresh_reset(store: RunStore, run: RunPaths) -> dict[str, Any]:
    """Delete the old attempt's outputs (via ``cellbench.runs.clean``) and release memory."""
    from cellbench.engine.reset import release_memory
    from cellbench.runs.clean import FRESH_KINDS, execute, plan_run_clean

    # the folder holding the run is the root: this store's, or the one a path named (--run PATH)
    report = execute(plan_run_clean(run, FRESH_KINDS), [run.root.parent])
    memory = release_memory()
    return {
        "removed": [str(r.path.relative_to(run.root)) for r in report.removed],
        "bytes": report.bytes_freed,
        "cuda_emptied": bool(memory.get("cuda_emptied")),
        "gc_collected": int(memory.get("gc_collected", 0)),
    }


def read_lr_find(run: RunPaths) -> dict[str, Any] | None:
    import json

    path = run.root / "lr_find.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _prepare(store: RunStore, request: TrainRequest, existing: RunPaths | None):
    """``(config, task, init_from, init_state)`` of a training or an LR finder: the resolved
    config, its task, and the ``--init-from`` weights; what the config needs and this machine
    lacks (TensorBoard) is refused before any folder or file is touched."""
    from cellbench.tasks import get_task

    config = resolve_config(request, existing)
    task = get_task(config.task)
    if config.train.tensorboard:
        from cellbench.engine.tensorboard import require_tensorboard

        require_tensorboard()
    init_from, init_state = None, None
    if request.init_from:
        init_from, init_state = load_init_weights(store, request.init_from)
    return config, task, init_from, init_state


def train(request: TrainRequest, reporter=None, callbacks: Sequence[Any] = ()):
    """Run one training as ``request`` says; returns ``(RunPaths, TrainResult)``.

    Under torchrun (several processes) every rank builds the same data and model; what touches
    the run folder (create it, take its lock, reset it, decide that a resume has nothing left to
    do) happens on rank 0 and its outcome, or its refusal, reaches every rank
    (``distributed.on_main``). The other ranks get a silent event writer and reporter."""
    from cellbench.engine import distributed

    store = RunStore(request.runs_dir)
    if request.resume and request.fresh:
        raise UsageError("--resume and --fresh exclude each other")
    existing = find_existing(store, request)
    if existing is not None:
        check_conflict(existing, request)
    config, task, init_from, init_state = _prepare(store, request, existing)
    with distributed.process_group(config.train.device) as env:
        if not env.is_main:
            reporter = None  # rank 0 speaks for the run
        for note in request.notes if reporter is not None else ():
            reporter.message(note)
        return _train(
            store, request, existing, config, task, init_from, init_state, reporter, callbacks
        )


def _train(store, request, existing, config, task, init_from, init_state, reporter, callbacks):
    from contextlib import ExitStack

    from cellbench.engine import distributed
    from cellbench.engine.checkpoint import load_checkpoint
    from cellbench.engine.components import build_components
    from cellbench.runs.summary import summarize

    def build():
        source = f"--init-from {init_from}"
        return build_components(config, task, init_state=init_state, init_source=source)

    env = distributed.current()
    with ExitStack() as stack:

        def claim(paths: RunPaths) -> RunPaths:
            if env.is_main:  # the one writer holds the lock until run_end
                stack.enter_context(RunLock(paths.lock))
            return paths

        if existing is None:
            components = build()  # before the folder exists: bad data or model leave no empty run
            paths = distributed.on_main(
                lambda: claim(create_run(store, request, default_name(config)))
            )
            return paths, _fit(paths, config, components, reporter, callbacks, init_from=init_from)

        distributed.on_main(lambda: claim(existing))
        if request.resume:
            done = distributed.on_main(lambda: summarize(existing).status == "completed")
            if done:
                return existing, _completed_result(existing)
            # the features/data it trained on, before anything: a re-extracted store is refused
            forced = inputs.check(existing.root, config.to_dict(), request.force_inputs, "--resume")
            if forced:
                inputs.note_forced(existing.root, "train --resume --force", forced)
            state = load_checkpoint(existing.last_checkpoint)
            note = fit_world_size(config, state, env.world_size)
            if note and reporter is not None:
                reporter.message(note)
            return existing, _fit(
                existing, config, build(), reporter, callbacks, resume_state=state
            )
        # the new data and model first: a typo in --set must not cost the old checkpoints
        components = build()
        reset = None
        if request.fresh:
            reset = distributed.on_main(lambda: fresh_reset(store, existing))
        return existing, _fit(
            existing, config, components, reporter, callbacks, init_from=init_from, reset=reset
        )


def fit_world_size(config: Config, state: dict[str, Any], world: int) -> str | None:
    """A run resumed with another number of processes continues with the same effective batch:
    the accumulation is set so that batch x accumulation x processes is what the checkpoint
    trained with (the training order is the same permutation at any world size, so the updates
    see the same samples). When no whole accumulation does that, the resume is refused (exit 2).
    Returns the line that says what changed, or None."""
    saved_world = int(state.get("world_size") or 1)
    train = (state.get("config") or {}).get("train") or {}
    saved_accum = int(train.get("grad_accum_steps", config.train.grad_accum_steps))
    config.train.grad_accum_steps = saved_accum  # the checkpoint's: an earlier resume may set it
    if saved_world == world:
        return None
    micro = saved_world * saved_accum  # micro-batches of batch_size per optimizer update
    if micro % world:
        effective = micro * config.train.batch_size
        raise UsageError(
            f"this run trained with {saved_world} process(es) x accumulation {saved_accum} "
            f"(effective batch {effective}); {world} process(es) cannot keep that effective "
            f"batch: resume it with --nproc N where N divides {micro}"
        )
    config.train.grad_accum_steps = micro // world
    return (
        f"resumed with {world} process(es) instead of {saved_world}: train.grad_accum_steps "
        f"{saved_accum} -> {micro // world} keeps the effective batch "
        f"{micro * config.train.batch_size}"
    )


def _fit(paths: RunPaths, config: Config, components, reporter, callbacks, **kwargs):
    from cellbench.engine import distributed
    from cellbench.engine.trainer import Trainer

    main = distributed.current().is_main
    if kwargs.get("resume_state") is None and main:
        config.save(paths.config)
        inputs.record(paths.root, config.to_dict())  # what it trains on, for eval/predict/resume
    lr_find = read_lr_find(paths)
    extra = {"lr_find": lr_find} if lr_find else {}
    callbacks = list(callbacks)
    board = None
    if config.train.tensorboard and main:  # rank 0 alone writes the run folder
        from cellbench.engine.tensorboard import TensorBoardWriter

        board = TensorBoardWriter(paths.root)
        callbacks.append(board)
    writer = EventWriter(paths.events) if main else SilentEvents()
    with writer as events:
        trainer = Trainer(
            components, paths, events, reporter, callbacks, extra_metrics=extra, **kwargs
        )
        try:
            result = trainer.fit()
        finally:
            if board is not None:
                board.close()
        if result.status == "completed" and main:
            _finalize(paths, components, events, result, reporter)
        # the other ranks wait for rank 0's last writes; a peer already gone cannot join, and
        # everything is written by now
        with contextlib.suppress(Exception):  # a lost peer at the very end changes nothing
            distributed.barrier()
        return result


class SilentEvents:
    """The event writer of ranks other than 0: rank 0 alone writes ``events.jsonl``."""

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, **fields}

    def close(self) -> None: ...

    def __enter__(self) -> SilentEvents:
        return self

    def __exit__(self, *exc) -> None: ...


def _finalize(paths: RunPaths, components, events: EventWriter, result, reporter) -> None:
    """The task's closing report (``Task.finalize``; organ: calibration, per-tissue table), into
    metrics.json and an ``eval`` event."""
    from cellbench.atomic import atomic_write_json

    extra = components.task.finalize(
        components.config, components.data, paths.root, components.device
    )
    if not extra:
        return
    result.metrics.update(extra)
    atomic_write_json(paths.metrics, result.metrics)
    metrics = components.task.finalize_event(extra)
    calibration = extra.get("calibration") or {}
    events.emit("eval", split="val", checkpoint="best", metrics=metrics)
    if reporter is not None and calibration:
        reporter.message(
            f"calibration on the validation fold: temperature {calibration['temperature']:.3g}, "
            f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}"
        )


def _one_process_only(what: str) -> None:
    from cellbench.engine.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise UsageError(f"{what} runs in one process: start it without torchrun")


def _completed_result(paths: RunPaths):
    import json

    from cellbench.engine.trainer import TrainResult

    try:
        metrics = json.loads(paths.metrics.read_text())
    except (OSError, ValueError):
        metrics = {}
    best = metrics.get("best") or {}
    return TrainResult(
        status="completed",
        reason="already completed: nothing to resume",
        best={k: best.get(k) for k in ("metric", "value", "epoch")},
        epochs=int(metrics.get("epochs") or 0),
        metrics=metrics,
    )


def _run_for_tool(store: RunStore, request: TrainRequest, config: Config, suffix: str) -> RunPaths:
    existing = find_existing(store, request)
    if existing is not None:
        return existing
    return create_run(store, request, default_name(config, suffix))


def lr_find(request: TrainRequest, reporter=None):
    """``train --lr-find``: range test, outputs in the run folder; returns (RunPaths, result).

    The run is ``--run`` (created if new) or a new ``<model>-<task>``; a run that has trained
    keeps its config and training outputs, only ``lr_find.*`` are (re)written.
    """
    from cellbench.engine.components import build_components
    from cellbench.engine.lr_finder import lr_range_test, save_lr_find

    if request.resume or request.fresh:
        raise UsageError("--lr-find runs before a training: it takes neither --resume nor --fresh")
    _one_process_only("--lr-find")
    store = RunStore(request.runs_dir)
    existing = find_existing(store, request)
    config, task, init_from, init_state = _prepare(store, request, existing)
    c = build_components(
        config, task, init_state=init_state, init_source=f"--init-from {init_from}"
    )
    paths = existing or _run_for_tool(store, request, config, "")
    settings = config.train.lr_find
    with RunLock(paths.lock):
        if not has_trained(paths):
            config.save(paths.config)
        c.train_generator.manual_seed(config.train.seed)
        if reporter is not None:
            reporter.begin("lr range test", settings.steps)
        result = lr_range_test(
            c.forward_model,
            c.optimizer,
            c.train_criterion,
            c.train_loader,
            c.device,
            start_lr=settings.start_lr,
            end_lr=settings.end_lr,
            steps=settings.steps,
            beta=settings.smoothing,
            diverge=settings.diverge,
            autocast=c.precision.autocast,
            scaler=c.scaler,
            batch_transform=c.batch_transform,
            split_batch=task.split_batch,
            on_step=(lambda i, lr, loss: reporter.advance()) if reporter is not None else None,
        )
        if reporter is not None:
            reporter.close()
        save_lr_find(result, paths.root)
    return paths, result


def overfit(request: TrainRequest, n: int, reporter=None):
    """``train --overfit-small N`` in a new run ``<model>-<task>-overfit``; (RunPaths, result)."""
    import os

    from cellbench.atomic import atomic_write_json
    from cellbench.engine.checkpoint import weights_fingerprint
    from cellbench.engine.device import describe_device
    from cellbench.engine.overfit import overfit_config, overfit_small
    from cellbench.tasks import get_task

    if request.resume or request.fresh or request.init_from:
        raise UsageError("--overfit-small starts from new weights in a new run")
    _one_process_only("--overfit-small")
    store = RunStore(request.runs_dir)
    if request.run is not None and store.find(request.run) is not None:
        raise RunConflict(f"--run {request.run}: exists; --overfit-small writes a new run")
    config = resolve_config(request, None)
    task = get_task(config.task)
    plain = overfit_config(config, task, n)
    data = task.build_data(plain)  # before the folder: bad data leave no empty run
    paths = create_run(store, request, default_name(config, "-overfit"))
    with RunLock(paths.lock), EventWriter(paths.events) as events:
        plain.save(paths.config)

        def on_start(c) -> None:
            events.emit(
                "run_start",
                task=config.task,
                model=task.model_label(config),
                config_hash=plain.hash(),
                device=describe_device(c.device),
                params=c.num_params,
                init_fingerprint=weights_fingerprint(c.model),
                resumed=False,
                start_epoch=0,
                reset=None,
                init_from=None,
                pid=os.getpid(),
                overfit_small=n,
            )

        def on_pass(steps: int, loss: float) -> None:
            events.emit(
                "step", epoch=1, step=steps, loss=loss, lr=plain.train.lr, samples_per_s=None
            )
            if reporter is not None:
                reporter.step_stats(loss, plain.train.lr, 0.0)

        try:
            result, _ = overfit_small(
                config, task, n, on_pass=on_pass, data=data, on_start=on_start
            )
        except BaseException as exc:
            events.emit(
                "run_end", status="failed", reason=f"{type(exc).__name__}: {exc}", best=None
            )
            raise
        verdict = "passed" if result.passed else "failed"
        message = (
            f"{verdict}: loss {result.final_loss:.4g} after {result.steps} steps on "
            f"{result.examples} examples (threshold {result.threshold:g}, "
            f"budget {result.max_steps} steps)"
        )
        events.emit(
            "warning",
            check="overfit_small",
            severity="info" if result.passed else "error",
            message=message,
        )
        if reporter is not None:
            reporter.warning("overfit_small", "info" if result.passed else "error", message)
        metrics = {"run": paths.root.name, "status": "completed" if result.passed else "failed"}
        metrics["overfit_small"] = result.to_dict()
        atomic_write_json(paths.metrics, metrics)
        events.emit(
            "run_end",
            status=metrics["status"],
            reason=message,
            best={"metric": "train_loss", "value": result.final_loss, "epoch": None},
        )
    return paths, result
