"""Stopping a running training from outside: SIGINT to the process that holds the run's lock
(SIGTERM when that process ignores SIGINT, as a background job of a script does).

The trainer handles SIGINT as Ctrl-C: it stops at the next step, keeps ``last.pt`` (the last
completed epoch) and ends ``interrupted``, so ``train --resume`` continues it. Before signalling,
the lock's pid is checked to be *this run's* writer on *this host*: a pid on another host cannot be
signalled from here, and a pid reused by an unrelated process after a crash (its start time differs
from the one the lock recorded) must never receive the signal. Used by ``cellbench runs stop`` and
the TUI's stop key; pure Python (no torch).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cellbench.errors import RunConflict
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import pid_alive, read_lock, started_as_recorded


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    signum: int = signal.SIGINT

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class NotRunning(Exception):
    """The run has no live writer: nothing to stop (the message says its state)."""


def running_holder(run: RunPaths) -> Holder:
    """The live local process writing ``run``; ``NotRunning`` when there is none, ``RunConflict``
    when it runs on another host (its pid means nothing here)."""
    info = read_lock(run.lock)
    if info is None:
        raise NotRunning(f"{run.root.name}: not running (no lock: no process is writing it)")
    pid, host = info["pid"], str(info.get("host", "?"))
    if host != socket.gethostname():
        raise RunConflict(
            f"{run.lock}: held by pid {pid} on host {host}, not this host "
            f"({socket.gethostname()}); run `cellbench runs stop` there"
        )
    if not pid_alive(pid):
        raise NotRunning(f"{run.root.name}: not running (its writer, pid {pid}, is gone)")
    same = started_as_recorded(info)
    if same is None:
        # a cellbench writer records when it started: without that (a lock it did not write)
        # or without the process's own start time, the pid cannot be proved to be the writer
        raise RunConflict(
            f"{run.lock}: cannot prove that pid {pid} is this run's writer (the lock records "
            "no start time, or the process's is unreadable); not signalling it"
        )
    if not same:
        # the writer died and the pid was reused: signalling it would hit an unrelated process
        raise NotRunning(
            f"{run.root.name}: not running (pid {pid} now belongs to another process, "
            "started after the run's writer)"
        )
    return Holder(pid, host, stop_signal(pid))


def ignores(pid: int, signum: int) -> bool:
    """Whether ``pid`` ignores ``signum`` (Linux ``/proc``; False where unknown). A training
    started in the background by a script (``cellbench train ... &``) ignores SIGINT."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def stop_signal(pid: int) -> int:
    """SIGINT (Ctrl-C's path), or SIGTERM (the trainer's same graceful path) for a process that
    ignores SIGINT."""
    return signal.SIGTERM if ignores(pid, signal.SIGINT) else signal.SIGINT


def request_stop(run: RunPaths) -> Holder:
    """Signal the run's writer to stop; it checkpoints and ends ``interrupted``."""
    holder = running_holder(run)
    try:
        os.kill(holder.pid, holder.signum)
    except ProcessLookupError:
        raise NotRunning(f"{run.root.name}: not running (pid {holder.pid} just ended)") from None
    except PermissionError:
        raise RunConflict(
            f"{run.lock}: pid {holder.pid} belongs to another user; cannot signal it"
        ) from None
    return holder


def wait_stopped(
    run: RunPaths, holder: Holder, timeout: float | None = None, poll: float = 0.2
) -> bool:
    """Wait until the signalled writer let go of the run: its lock released (the trainer's last
    act, after ``run_end``) or its process gone; False when ``timeout`` passed first. (The pid
    alone is not enough: an exited child its parent has not reaped yet still answers.)"""
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid_alive(holder.pid):
        info = read_lock(run.lock)
        if info is None or info["pid"] != holder.pid:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def _runs_dir_args(run: RunPaths) -> list[str]:
    # copyable from this folder: name the runs folder unless it is ./runs
    root = run.root.parent.resolve()
    return [] if root == (Path.cwd() / "runs").resolve() else ["--runs-dir", str(root)]


def resume_commands(run: RunPaths) -> dict[str, str]:
    """The exact commands that continue a stopped/crashed run (when it has a ``last.pt``) and
    that retrain it from new weights with its saved config."""
    base = ["cellbench", "train", "--run", run.root.name, *_runs_dir_args(run)]
    commands = {}
    if run.last_checkpoint.is_file():
        commands["resume"] = shlex.join([*base, "--resume"])
    commands["retrain"] = shlex.join([*base, "--fresh"])
    return commands


def this_pid() -> int:
    return os.getpid()
