"""The local backend: a pool of worker threads, each running one trial process at a time.

Each trial is its own ``python -m cellbench train ...`` process: process exit is the only sure way
to hand GPU memory back, and a crash (OOM, segfault) takes only that trial down. The pool:

- splits the CPU between workers (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = cores // workers, which
  torch reads at start-up for its intra-op threads);
- on a machine with GPUs pins each worker to one GPU (``CUDA_VISIBLE_DEVICES``), one trial per GPU;
- sends each trial's output to ``<sweep>/logs/<trial>.log``;
- forwards SIGINT/SIGTERM to the running trials as one SIGINT each (``train`` then checkpoints and
  ends ``interrupted``; a second signal is forwarded again and aborts them at once), starts no new
  trial, and reports the pool as interrupted. Trials run in their own process group, so a Ctrl-C
  in the terminal reaches them once, through the sweep, not twice.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHER = "cellbench.cli.trial"  # the trial entry point (lives in cli/: it starts the CLI)
# the pid of the process that started a trial, read by the launcher (cellbench.cli.trial)
PARENT_ENV = "CELLBENCH_SWEEP_PARENT"


def cpu_count() -> int:
    from cellbench.cpus import usable_cpus

    return usable_cpus()


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else NVML's count.
    NVML (nvidia-ml-py) answers in milliseconds without importing torch or creating a context."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: a CPU machine
        return []


def default_workers(n_trials: int, gpus: list[str], cores_per_trial: int = 1) -> int:
    """One per GPU; on CPU one per two cores (a trial with one thread trains slowly)."""
    # a trial of N CPU processes (--nproc N) takes N times the cores of a one-process trial
    workers = len(gpus) if gpus else max(1, cpu_count() // (2 * cores_per_trial))
    return max(1, min(workers, n_trials))


def trial_command(args: list[str]) -> list[str]:
    """``python -m cellbench.cli.trial train ...``: ``cellbench train`` behind a launcher that
    asks Linux to SIGINT the trial if the sweep dies (see ``cellbench.cli.trial``)."""
    return [sys.executable, "-m", LAUNCHER, *args]


@dataclass
class Job:
    key: str  # the trial id
    args: list[str]  # cellbench arguments: ["train", ...]
    log: Path


@dataclass
class PoolResult:
    exit_codes: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    signum: int | None = None  # the first stop signal: the sweep exits 128 + it (143 SIGTERM)


class LocalPool:
    def __init__(
        self,
        workers: int,
        gpus: list[str] | None = None,
        threads: int | None = None,
        gpus_per_trial: int = 1,
    ):
        self.workers = max(1, workers)
        self.gpus = list(gpus or [])
        self.gpus_per_trial = max(1, gpus_per_trial)
        self.threads = threads or max(1, cpu_count() // self.workers)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._signals = 0
        self.signum: int | None = None

    def env_for(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        env[PARENT_ENV] = str(os.getpid())
        if self.gpus:
            # slot k of an N-GPU trial pool: GPUs kN .. kN+N-1 (its torchrun's local ranks)
            n = self.gpus_per_trial
            groups = max(1, len(self.gpus) // n)
            start = (slot % groups) * n
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus[start : start + n])
        return env

    def run(
        self,
        jobs: list[Job],
        on_start: Callable[[Job, int], None] = lambda job, slot: None,
        on_end: Callable[[Job, int], None] = lambda job, code: None,
    ) -> PoolResult:
        todo: queue.Queue[Job] = queue.Queue()
        for job in jobs:
            todo.put(job)
        result = PoolResult()
        threads = [
            threading.Thread(target=self._worker, args=(slot, todo, on_start, on_end, result))
            for slot in range(min(self.workers, len(jobs)))
        ]
        restore = self._install_signals()
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.2)  # short joins: the main thread stays free for signals
        except KeyboardInterrupt as exc:  # not the main thread, or SIGHUP (the CLI root's)
            self._interrupt(getattr(exc, "signum", signal.SIGINT))
            for t in threads:
                t.join()
        finally:
            restore()
        result.interrupted = self._stop.is_set()
        result.signum = self.signum
        return result

    def _worker(self, slot, todo: queue.Queue, on_start, on_end, result: PoolResult) -> None:
        while not self._stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "ab") as log, self._lock:
                if self._stop.is_set():
                    return
                on_start(job, slot)
                proc = subprocess.Popen(
                    trial_command(job.args),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env_for(slot),
                    start_new_session=True,
                )
                self._procs[job.key] = proc
            code = proc.wait()
            with self._lock:
                self._procs.pop(job.key, None)
            result.exit_codes[job.key] = code
            on_end(job, code)

    # ------------------------------------------------------------------ signals

    def _interrupt(self, signum: object = None, *_: object) -> None:
        if self.signum is None and isinstance(signum, int):
            self.signum = int(signum)
        self._stop.set()
        self._signals += 1
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._interrupt)

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore
