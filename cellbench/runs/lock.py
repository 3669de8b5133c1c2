"""A per-run writer lock: one process writes a run at a time.

The lock file holds the writer's pid and host. A second writer fails with ``RunConflict``
naming the holder; a lock left by a dead process (same host, pid gone) is taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cellbench.errors import RunConflict

# the run folders the writer holding the lock writes with cellbench.atomic (root, checkpoints)
RUN_TEMP_FOLDERS = (".", "checkpoints")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or beyond any pid
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None if unknown."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no such process, no permission, or psutil missing
        return None


PID_MAX = 2**31 - 1  # pid_t is a signed 32-bit int: a larger number names no process


def parse_lock(text: str) -> dict | None:
    """A lock's payload: a JSON object whose ``pid`` is a process id; None for anything else.
    cellbench links a lock into place whole (``RunLock``), so one that does not parse, or
    names no pid, was not written by a cellbench writer: nothing holds it."""
    try:
        info = json.loads(text)
    except ValueError:
        return None
    if not isinstance(info, dict):
        return None
    pid = info.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= PID_MAX:
        return None
    return info


def read_lock(path: Path) -> dict | None:
    """The payload of the lock at ``path`` (``parse_lock``), or None: no lock, or not one."""
    try:
        return parse_lock(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def holder_alive(info: dict) -> bool:
    """True when the lock payload ``info`` (from ``parse_lock``) names a live process."""
    if info.get("host") != socket.gethostname():
        return True  # another host's pids cannot be checked: assume it is alive
    if not pid_alive(info["pid"]):
        return False
    return started_as_recorded(info) is not False  # unknown: never take a lock that may be held


def started_as_recorded(info: dict) -> bool | None:
    """Whether the live process ``info["pid"]`` started when the lock says its writer did (a
    pid can be reused by an unrelated process after a crash); None when either start time is
    unknown (a lock cellbench did not write records none)."""
    recorded, actual = info.get("pid_started"), process_start_time(info["pid"])
    if not isinstance(recorded, int | float) or isinstance(recorded, bool) or actual is None:
        return None
    return abs(recorded - actual) < 1.0


def lock_holder_alive(path: Path) -> bool:
    """True when ``path`` is a lock held by a live process."""
    info = read_lock(path)
    return info is not None and holder_alive(info)


class RunLock:
    def __init__(self, path: str | os.PathLike, what: str = "run"):
        self.path = Path(path)
        self.acquired = False
        self.what = what  # what the lock guards, for the message: run, feature store, sweep

    def _try_create(self) -> bool:
        # Write the payload to a private file, then hard-link it into place: the lock appears
        # atomically with its content, so a reader never sees an empty lock file.
        payload = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "pid_started": process_start_time(os.getpid()),
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._try_create():
                self.acquired = True
                self._remove_stale_temps()
                return self
            # Check-and-break under a guard so two processes can't both break the same stale
            # lock and then remove each other's fresh one.
            with open(self.path.with_name(f".{self.path.name}.guard"), "a") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                # decide on this one reading: reading the file again could see a lock that a
                # new holder linked meanwhile and delete it while that holder is alive
                try:
                    text = self.path.read_text()
                except FileNotFoundError:
                    # released meanwhile: try to create again. Never "is it still there?": a
                    # new holder may have linked its lock since, and it is not ours to remove
                    continue
                except OSError as exc:  # unreadable (another user's): not ours to judge
                    raise RunConflict(
                        f"{self.path}: cannot read the {self.what} lock ({exc})"
                    ) from exc
                info = parse_lock(text)
                if info is None:
                    # locks appear whole (hard link), so an unreadable one is corrupt, not
                    # half-written: nothing holds it, and only a guard holder removes it
                    self.path.unlink(missing_ok=True)
                    continue
                if holder_alive(info):
                    raise RunConflict(
                        f"{self.path.parent}: locked by pid {info.get('pid')} on "
                        f"{info.get('host')} (another cellbench process is writing this "
                        f"{self.what})"
                    )
                self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise RunConflict(f"{self.path}: could not take the {self.what} lock")

    def _remove_stale_temps(self) -> None:
        """Temp files of writers killed mid-write (``checkpoints/.last.pt.*.tmp``, ``.lock.<pid>
        .tmp``): with the lock ours, no live writer of the run can own them. Lock temps of live
        pids are kept: a process trying to take the lock owns one for a moment. ``eval/`` is not
        swept: an evaluation writes there without the lock while a training holds it."""
        from cellbench.atomic import remove_stale_temps

        folder = self.path.parent
        for where in RUN_TEMP_FOLDERS:
            remove_stale_temps(folder / where)
        for leftover in folder.glob(f".{self.path.name}.*.tmp"):
            pid = leftover.name[len(self.path.name) + 2 : -len(".tmp")]
            if pid.isdigit() and not pid_alive(int(pid)):
                leftover.unlink(missing_ok=True)

    def release(self) -> None:
        if self.acquired:
            info = read_lock(self.path)
            if info and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.acquired = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def lock_if_free(path: str | os.PathLike) -> Iterator[RunLock | None]:
    """The run's lock while the block runs, or None when a live process (a training) holds it:
    an evaluation then writes its own files but leaves that process's event stream alone."""
    lock = RunLock(path)
    try:
        lock.acquire()
    except RunConflict:
        yield None
        return
    try:
        yield lock
    finally:
        lock.release()
