"""The Ray Tune backend: the same trials, run folders and leaderboard, on a Ray cluster.

``ray.tune.Tuner`` schedules one Tune trial per sweep trial (a ``grid_search`` over the trials
cellbench resolved, so both backends train exactly the same configs). Each Tune trial starts the
trial's ``cellbench train`` process, as the local pool does, rather than training inside the Ray
worker: the run folder is the same, and GPU memory goes back when that process exits, whatever
Ray does with its worker. The Tune function tails the run's ``events.jsonl`` and calls
``tune.report`` once per ``epoch`` event (the metrics the engine wrote), which is what ASHA
needs to stop poor trials early. A trial stopped by ASHA gets a SIGINT (it checkpoints and ends
``interrupted``) and is recorded ``pruned``; if Ray tears its worker down first, the launcher's
parent-death signal does the same (``cellbench.cli.trial``).

Resources per trial: ``cores // workers`` CPUs and, when the cluster has GPUs, one GPU (or
``--gpus-per-trial``); Ray sets ``CUDA_VISIBLE_DEVICES`` for it. On a cluster (``--address``)
every node must see the runs and sweeps folders at the same path (a shared file system).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cellbench.errors import UsageError
from cellbench.runs.events import EventTail
from cellbench.runs.lock import lock_holder_alive
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize
from cellbench.sweep.local import PARENT_ENV, Job, cpu_count, trial_command

MISSING = "--backend ray needs Ray Tune, not installed here: pip install 'cellbench[ray]'"


def import_ray():
    try:
        import ray
        from ray import tune
    except ImportError as exc:
        raise UsageError(MISSING) from exc
    return ray, tune


def monitored(trial) -> tuple[str, str, int]:
    """The metric ASHA compares, its mode and the trial's epochs, from the trial's config."""
    from cellbench.config import load_config
    from cellbench.engine.early_stopping import resolve_mode

    config = load_config(trial.profile, None, trial.sets)
    name = config.train.early_stopping.monitor
    metric = name if name.startswith(("val_", "train_")) else f"val_{name}"
    return metric, resolve_mode(config.train.early_stopping.mode, metric), config.train.epochs


def _epoch_metrics(event: dict[str, Any]) -> dict[str, Any]:
    row = {"epoch": int(event["epoch"])}
    for key in ("train_loss", "val_loss", "lr"):
        if event.get(key) is not None:
            row[key] = event[key]
    row.update({k: v for k, v in (event.get("metrics") or {}).items() if v is not None})
    return row


def tune_trial(config: dict[str, Any]) -> None:
    """The Tune function: one cellbench trial process, its epochs reported to Tune."""
    from ray import tune

    job = config["job"]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(job["threads"])
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_ENV] = str(os.getpid())
    Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
    store = RunStore(job["runs_dir"])
    with open(job["log"], "ab") as log:
        proc = subprocess.Popen(
            trial_command(job["args"]),
            cwd=job["cwd"],  # Tune moves its workers into trial folders; trials keep the user's
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    tail = None
    try:
        while True:
            code = proc.poll()
            if tail is None:
                run = store.find(job["name"])
                tail = EventTail(run.events) if run is not None else None
            for event in tail.read()[0] if tail is not None else []:
                if event.get("kind") == "epoch":
                    tune.report(_epoch_metrics(event))
            if code is not None:
                return
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # Tune stopped this trial (ASHA) or is shutting down
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


def _progress_callback(tune):
    """A Tune callback that calls ``on_start(trial key)`` in the driver when a trial starts.
    Tune pickles its callbacks with its state: the hook (the sweep, its locks and files) is an
    attribute left out of the pickle, never a closure of the class."""

    class Progress(tune.Callback):
        def __init__(self, on_start):
            self.on_start = on_start

        def __getstate__(self):
            return {}

        def __setstate__(self, state):
            self.on_start = lambda key: None

        def on_trial_start(self, iteration, trials, trial, **info):
            self.on_start(trial.config["job"]["key"])

    return Progress


def _wait_for_writer(store: RunStore, name: str, timeout: float = 120.0) -> None:
    """A pruned trial's process may still be writing its checkpoint when Tune says it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.find(name)
        if run is None or not lock_holder_alive(run.lock):
            return
        time.sleep(0.2)


def run_on_ray(sweep, todo: list[tuple[Any, Job]]) -> bool:
    """Run ``todo`` on Ray Tune; True when interrupted."""
    ray, tune = import_ray()
    from ray.tune.schedulers import ASHAScheduler

    options = sweep.options
    started_here = not ray.is_initialized()
    if started_here:
        # Ray SIGKILLs what its workers leave behind; a trial stopped by ASHA should rather get
        # its launcher's SIGINT and checkpoint (local Ray; a cluster keeps its own setting)
        os.environ.setdefault("RAY_kill_child_processes_on_worker_exit", "0")
        with contextlib.redirect_stdout(sys.stderr):
            if options.address:
                ray.init(address=options.address, log_to_driver=False)
            else:
                ray.init(num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        per_trial = max(1, options.nproc)
        workers = options.workers or max(
            1, min(len(todo), cluster_gpus // per_trial or cluster_cpus // (2 * per_trial))
        )
        threads = max(1, cluster_cpus // workers)
        gpus = (
            options.gpus_per_trial
            if options.gpus_per_trial is not None
            else (options.nproc if cluster_gpus else 0)  # an N-process trial: N GPUs
        )
        trainable = tune.with_resources(tune_trial, {"cpu": threads, "gpu": gpus})
        by_id = {trial.id: (trial, job) for trial, job in todo}
        jobs = [
            {
                "key": job.key,
                "name": trial.name,
                "args": job.args,
                "log": str(job.log.resolve()),
                "runs_dir": str(sweep.store.root.resolve()),
                "cwd": os.getcwd(),
                "threads": threads,
            }
            for trial, job in todo
        ]
        scheduler = None
        if options.asha:
            metric, mode, epochs = monitored(todo[0][0])
            scheduler = ASHAScheduler(
                metric=metric, mode=mode, time_attr="epoch", max_t=epochs, grace_period=1
            )
        sweep.say(
            f"{len(todo)} trial(s) on Ray Tune ({cluster_cpus} CPU, {cluster_gpus} GPU), "
            f"{workers} at a time, {threads} CPU and {gpus} GPU each"
            + (" · ASHA" if scheduler else "")
        )

        def on_start(key: str) -> None:
            sweep.trial_started(*by_id[key])

        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers, scheduler=scheduler),
            run_config=tune.RunConfig(
                storage_path=str((sweep.folder.root / "ray").resolve()),
                name="tune",
                verbose=0,
                callbacks=[_progress_callback(tune)(on_start)],
            ),
        )
        interrupted, stopped = False, set()
        try:
            # Tune prints its own tables: to stderr, so `sweep --json` keeps stdout clean JSON
            with contextlib.redirect_stdout(sys.stderr):
                grid = tuner.fit()
            # a trial the scheduler stopped never sent its final ("done") result
            stopped = {r.config["job"]["key"] for r in grid if not (r.metrics or {}).get("done")}
        except KeyboardInterrupt:
            interrupted = True
        for trial, _job in todo:
            _wait_for_writer(sweep.store, trial.name)
            run = sweep.store.find(trial.name)
            pruned = False
            if scheduler is not None and trial.id in stopped and run is not None:
                # stopped by ASHA: interrupted (SIGINT, checkpointed) or killed with its worker
                pruned = summarize(run).status in ("interrupted", "crashed")
            sweep.trial_ended(trial, None, interrupted=interrupted, pruned=pruned)
        return interrupted
    finally:
        if started_here:
            ray.shutdown()
