"""Run a sweep: open its folder, resolve each phase's trials, hand them to a backend, rank.

Rerunning a sweep continues it: a trial whose run completed (or failed, or was pruned) is
skipped, an interrupted or crashed one is resumed with ``train --resume`` (``--fresh`` when it
died before its first checkpoint), a pending one starts. A phase's trials are resolved once and
saved in ``trials.json``, so a rerun trains the very same configs. One sweep process at a time
holds the sweep's lock (a second one exits 4).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from cellbench.errors import BadInputError, RunConflict, UsageError, one_line
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import RunLock, lock_holder_alive
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize
from cellbench.sweep import leaderboard
from cellbench.sweep.local import Job
from cellbench.sweep.phases import resolve_phase
from cellbench.sweep.spec import SweepSpec
from cellbench.sweep.store import FINISHED, SweepFolder, SweepState
from cellbench.sweep.trials import Trial

# trial process exit codes that mean "stopped on request", not "broken"
INTERRUPTED_CODES = (130, -2, -15)


@dataclass
class SweepOptions:
    backend: str = "local"  # local | ray
    workers: int | None = None
    address: str | None = None  # ray
    asha: bool = False  # ray
    gpus_per_trial: float | None = None  # ray
    retry_failed: bool = False
    phase: str | None = None
    # a trial is itself an N-process training (``train --nproc N``): N GPUs per trial
    nproc: int = 1
    machine: str | None = None  # ``train --machine``: each new trial fitted to this machine


@dataclass
class SweepOutcome:
    board: dict[str, Any]
    interrupted: bool = False
    stopped_by: str | None = None  # a failed smoke phase
    counts: dict[str, int] = field(default_factory=dict)
    signum: int | None = None  # the signal that interrupted it (exit 128 + signum)


def _is_foreign(root: Path) -> bool:
    try:
        return root.exists() and (not root.is_dir() or any(root.iterdir()))
    except OSError:
        return True


def _refuse_foreign_folder(root: Path) -> None:
    """A sweep writes spec.yaml, trials.json, leaderboard.csv... into its folder: a folder of
    that name that is not a sweep's and holds anything is the user's, never written into."""
    if _is_foreign(root):
        raise RunConflict(
            f"{root}: exists and is not a sweep folder (no spec.yaml); cellbench will not write "
            "its sweep files there — give another --name or --sweeps-dir"
        )


def open_sweep(spec: SweepSpec, root: Path, reuse_default: bool) -> SweepFolder:
    """The sweep's folder, created with its spec, or the existing one if it is the same study.

    A different study under the same name exits 4; with ``reuse_default`` (a name cellbench
    chose) the first free ``name-2``, ``name-3``... is used instead."""
    base, n = spec.name, 1
    while True:
        folder = SweepFolder(root / spec.name)
        if not folder.exists():
            if not (reuse_default and _is_foreign(folder.root)):
                _refuse_foreign_folder(folder.root)
                folder.root.mkdir(parents=True, exist_ok=True)
                folder.write_spec(spec.to_dict())
                return folder
        elif spec.same_study(folder.read_spec()):
            return folder
        if not reuse_default:
            raise RunConflict(
                f"{folder.root}: a sweep named '{spec.name}' exists with other settings; "
                "give another --name (or remove that folder)"
            )
        n += 1
        spec.name = f"{base}-{n}"


def trial_args(
    trial: Trial,
    store: RunStore,
    runs_root: Path,
    nproc: int = 1,
    machine: str | None = None,
) -> tuple[list[str] | None, str]:
    """What to run for ``trial`` now: ``(args, why)``; ``args`` is None when nothing is to do.

    ``nproc`` > 1 trains every trial (resumes included) with ``--nproc``; ``machine`` fits new
    and restarted trials (a resume keeps its saved config)."""
    args, why = _trial_args(trial, store, runs_root)
    if args is None:
        return None, why
    if machine is not None and "--resume" not in args:
        args += ["--machine", machine]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return args, why


# what makes a trial the trial it is: its space values, epochs and seed (data paths and batch
# splits may legitimately differ between a trial's command and its saved, resolved config)
_IDENTITY_KEYS = ("train.epochs", "train.seed")


def trained_otherwise(trial: Trial, run: RunPaths) -> list[str]:
    """How the saved config of ``run`` (a run of the trial's name found in the runs folder)
    differs from the trial in what defines it: ``key saved (this trial: value)`` each; empty
    when it matches or cannot be compared (no readable saved config: it restarts anyway)."""
    from cellbench.config import config_from_dict, load_config
    from cellbench.dotted import flatten
    from cellbench.yamlio import read_yaml

    if not run.config.is_file():
        return []
    try:
        mine = flatten(load_config(trial.profile, None, trial.sets).to_dict())
        theirs = flatten(config_from_dict(read_yaml(run.config), str(run.config)).to_dict())
    except (BadInputError, UsageError):
        return []
    # only what the trial's command sets itself: the profile under it may be a workspace's
    # default that ``train`` picks, and --set wins over any profile
    given = {text.split("=", 1)[0].strip() for text in trial.sets}
    keys = [k for k in (*trial.params, *_IDENTITY_KEYS) if k in given]
    if theirs.get("train.machine"):  # --machine split its batch into micro-batch x accumulation
        keys = [k for k in keys if k not in ("train.batch_size", "train.grad_accum_steps")]
    return [
        f"{key} {theirs.get(key)!r} (this trial: {mine.get(key)!r})"
        for key in sorted(mine)
        if any(key == k or key.startswith(k + ".") for k in keys)
        and mine.get(key) != theirs.get(key)
    ]


def _trial_args(trial: Trial, store: RunStore, runs_root: Path) -> tuple[list[str] | None, str]:
    common = ["--run", trial.name, "--runs-dir", str(runs_root)]
    run = store.find(trial.name)
    if run is None:
        return trial.train_args() + common, "new"
    if lock_holder_alive(run.lock):
        return None, f"{run.root.name} is being written by another process"
    differs = trained_otherwise(trial, run)
    if differs:
        # counting it (completed) or resuming it (its saved config) would rank another
        # training under this trial's settings
        raise RunConflict(
            f"{run.root}: a run of trial {trial.id}'s name exists, trained with other settings "
            f"({'; '.join(differs[:3])}); give the sweep another --name, or remove that run"
        )
    status = summarize(run).status
    if status == "completed":
        return None, "completed"
    if status in ("interrupted", "crashed") and run.last_checkpoint.is_file():
        return ["train", *common, "--resume"], f"resume ({status})"
    # failed (with --retry-failed), or died before its first checkpoint: from new weights
    return trial.train_args() + common + ["--fresh"], f"restart ({status})"


class Sweep:
    def __init__(
        self,
        spec: SweepSpec,
        folder: SweepFolder,
        store: RunStore,
        options: SweepOptions,
        say: Callable[[str], None] = lambda line: None,
    ):
        self.spec = spec
        self.folder = folder
        self.store = store
        self.options = options
        self.say = say
        self.state = SweepState(folder)
        self.trials = folder.read_trials()
        self._board_lock = threading.Lock()

    # ------------------------------------------------------------------ phases

    def phases_to_run(self):
        names = [p.name for p in self.spec.phases]
        if self.options.phase is None:
            return list(self.spec.phases)
        if self.options.phase not in names:
            raise UsageError(
                f"--phase {self.options.phase}: not a phase of {self.spec.name} "
                f"(phases: {', '.join(names)})"
            )
        return [self.spec.phases[names.index(self.options.phase)]]

    def previous_ranking(self, phase) -> list[dict[str, Any]]:
        index = [p.name for p in self.spec.phases].index(phase.name)
        if index == 0:
            return []
        before = self.spec.phases[index - 1].name
        rows = [
            leaderboard.outcome(self.store, t, self.state.trial(t.id))
            for t in self.trials
            if t.phase == before
        ]
        return leaderboard.rank_groups(rows)

    def phase_trials(self, phase) -> list[Trial]:
        mine = [t for t in self.trials if t.phase == phase.name]
        if mine:
            return mine  # resolved before: the same configs on a rerun
        new = resolve_phase(self.spec, phase, self.previous_ranking(phase), self.trials)
        self.trials += new
        self.folder.write_trials(self.trials)
        return new

    # ------------------------------------------------------------------ run

    stop_signum: int | None = None

    def run(self) -> SweepOutcome:
        with RunLock(self.folder.lock, what="sweep"):
            return self._run()

    def _run(self) -> SweepOutcome:
        phases = self.phases_to_run()  # a bad --phase changes nothing
        self.state.set(status="running", backend=self.options.backend, started=time.time())
        try:
            interrupted, stopped_by = self._run_phases(phases)
        except KeyboardInterrupt:
            self.state.set(status="interrupted", ended=time.time())
            raise
        except Exception as exc:
            self.state.set(status="failed", reason=one_line(exc), ended=time.time())
            raise
        status = "interrupted" if interrupted else "failed" if stopped_by else "completed"
        self.state.set(status=status, ended=time.time())
        board = self.write_leaderboard()
        counts: dict[str, int] = {}
        for t in self.trials:
            s = self.state.trial(t.id)["status"]
            counts[s] = counts.get(s, 0) + 1
        return SweepOutcome(board, interrupted, stopped_by, counts, self.stop_signum)

    def _run_phases(self, phases) -> tuple[bool, str | None]:
        interrupted, stopped_by = False, None
        for phase in phases:
            trials = self.phase_trials(phase)
            self.state.set_phase(phase.name, "running")
            interrupted = self.run_trials(trials)
            statuses = [self.state.trial(t.id)["status"] for t in trials]
            if interrupted:
                self.state.set_phase(phase.name, "interrupted")
                break
            self.state.set_phase(phase.name, "completed")
            if phase.kind == "smoke" and any(s != "completed" for s in statuses):
                stopped_by = phase.name
                break
        return interrupted, stopped_by

    def write_leaderboard(self) -> dict[str, Any]:
        """Rewritten after every trial, so ``sweep show`` follows a sweep as it runs."""
        with self._board_lock:
            board = leaderboard.build(
                self.folder, self.trials, self.state, self.store, self.spec.phases
            )
            leaderboard.write(self.folder, board)
        return board

    def jobs(self, trials: list[Trial]) -> list[tuple[Trial, Job]]:
        todo = []
        for trial in trials:
            status = self.state.trial(trial.id)["status"]
            retry = self.options.retry_failed and status == "failed"
            if status in FINISHED and not retry:
                continue
            args, why = trial_args(
                trial, self.store, self.store.root, self.options.nproc, self.options.machine
            )
            if args is None:
                # a run another process is writing is "skipped": looked at again next time
                status = "completed" if why == "completed" else "skipped"
                run = self.store.find(trial.name)
                self.state.set_trial(
                    trial.id, status=status, reason=why, run=run.root.name if run else None
                )
                continue
            todo.append((trial, Job(trial.id, args, self.folder.log_path(trial))))
        return todo

    def run_trials(self, trials: list[Trial]) -> bool:
        """Run what is left of ``trials`` on the backend; True when interrupted."""
        todo = self.jobs(trials)
        if not todo:
            return False
        if self.options.backend == "ray":
            from cellbench.sweep.ray_backend import run_on_ray

            return run_on_ray(self, todo)
        return self._run_local(todo)

    def _run_local(self, todo: list[tuple[Trial, Job]]) -> bool:
        from cellbench.sweep.local import LocalPool, default_workers, visible_gpus

        gpus = visible_gpus()
        per_trial = self.options.nproc
        if gpus and per_trial > len(gpus):
            raise UsageError(f"--nproc {per_trial}: {len(gpus)} GPU(s) visible for the trials")
        slots = len(gpus) // per_trial if gpus else None
        workers = self.options.workers or default_workers(
            len(todo), gpus[:slots] if slots else [], cores_per_trial=per_trial
        )
        pool = LocalPool(workers, gpus, gpus_per_trial=per_trial)
        by_id = {t.id: t for t, _ in todo}
        self.say(
            f"{len(todo)} trial(s) on {workers} worker(s), {pool.threads} thread(s) each"
            + (f", GPUs {','.join(gpus)}" if gpus else "")
        )

        def on_start(job: Job, slot: int) -> None:
            self.trial_started(by_id[job.key], job)

        def on_end(job: Job, code: int) -> None:
            self.trial_ended(by_id[job.key], code, interrupted=pool._stop.is_set())

        result = pool.run([job for _, job in todo], on_start, on_end)
        self.stop_signum = self.stop_signum or result.signum
        return result.interrupted

    def trial_started(self, trial: Trial, job: Job) -> None:
        resume = "--resume" in job.args
        self.state.set_trial(trial.id, status="running", started=time.time(), resumed=resume)
        self.say(f"[cyan]{trial.id}[/] {escape(trial.name)} {'resumed' if resume else 'started'}")

    def trial_ended(self, trial: Trial, code: int, interrupted: bool, pruned: bool = False):
        run = self.store.find(trial.name)
        summary = summarize(run) if run is not None else None
        if pruned:
            status = "pruned"
        elif summary is not None and summary.status in ("completed", "failed", "interrupted"):
            status = summary.status
        else:
            status = "failed"
        if status == "failed" and (interrupted or code in INTERRUPTED_CODES):
            status = "interrupted"  # stopped by the sweep's signal before it could say so
        reason = None if status == "completed" else _last_error(self.folder.log_path(trial))
        self.state.set_trial(
            trial.id,
            status=status,
            exit_code=code,
            run=run.root.name if run else None,
            ended=time.time(),
            reason=reason,
        )
        best = ""
        if summary is not None and summary.best_value is not None:
            best = f" · {summary.best_metric} {summary.best_value:.4g}"
        colour = {"completed": "green", "interrupted": "yellow", "pruned": "yellow"}.get(
            status, "red"
        )
        note = f" · {reason}" if reason and status == "failed" else ""
        self.say(f"[cyan]{trial.id}[/] [{colour}]{status}[/]{best}{escape(note)}")
        self.write_leaderboard()


def _last_error(log: Path) -> str | None:
    """The trial's own one-line error (``error: ...``), or its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = errors[-1] if errors else (lines[-1] if lines else None)
    return line[:240] if line else None
