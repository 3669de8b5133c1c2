"""The run lock: a second writer is refused with the holder's pid; a dead holder's lock is taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cellbench.errors import RunConflict
from cellbench.runs.lock import RunLock, lock_if_free, read_lock


def test_acquire_writes_pid_and_release_removes(tmp_path):
    path = tmp_path / "lock"
    with RunLock(path):
        assert read_lock(path)["pid"] == os.getpid()
    assert not path.exists()


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cellbench.runs.lock import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('ok', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(RunConflict, match=f"locked by pid {holder.pid}") as info:
            RunLock(path).acquire()
        assert info.value.exit_code == 4
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "lock"
    import socket

    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
    with RunLock(path):
        assert read_lock(path)["pid"] == os.getpid()


def test_release_does_not_remove_someone_elses_lock(tmp_path):
    path = tmp_path / "lock"
    lock = RunLock(path).acquire()
    path.write_text(json.dumps({"pid": 1, "host": "x"}))  # taken over meanwhile
    lock.release()
    assert path.exists()


def test_lock_is_exclusive_under_contention(tmp_path):
    # Four processes take and release the lock in a tight loop. While holding it, each creates an
    # O_EXCL marker file: a second holder at the same time fails to create it and counts a clash.
    script = """
import os, sys, time
from cellbench.errors import RunConflict
from cellbench.runs.lock import RunLock
lock_path, marker = sys.argv[1], sys.argv[2]
clashes = held = 0
deadline = time.time() + 2.0
while time.time() < deadline:
    try:
        lock = RunLock(lock_path).acquire()
    except RunConflict:
        continue
    held += 1
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        clashes += 1
    else:
        os.close(fd)
        os.unlink(marker)
    lock.release()
print(clashes, held)
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "lock"), str(tmp_path / "marker")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert sum(c for c, _ in results) == 0
    assert sum(h for _, h in results) > 20  # the lock really changed hands many times


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    # A crashed writer's pid now belongs to another process (here: ourselves, started earlier
    # than the lock says): the start time differs, so the lock is taken over.
    import socket

    path = tmp_path / "lock"
    path.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "pid_started": 1.0})
    )
    with RunLock(path):
        assert read_lock(path)["pid_started"] != 1.0


def test_corrupt_lock_file_is_taken_over(tmp_path):
    path = tmp_path / "lock"
    path.write_text("{not json")  # e.g. a disk that filled up, or a hand edit
    with RunLock(path):
        assert read_lock(path)["pid"] == os.getpid()


def test_taking_the_lock_removes_temp_files_of_killed_writers(tmp_path):
    run = tmp_path / "0001-r"
    (run / "checkpoints").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = [
        run / "checkpoints" / ".last.pt.k3j_a9x2.tmp",  # a torch.save killed mid-write
        run / ".history.csv.0a1b2c3d.tmp",
        run / f".lock.{dead}.tmp",  # a lock payload of a process killed before os.link
    ]
    kept = [
        run / f".lock.{alive.pid}.tmp",  # a live process about to link it: not ours to take
        run / "eval" / ".val-best.json.0a1b2c3d.tmp",  # eval writes there without the lock
        run / "my-notes.tmp",
    ]
    try:
        for p in stale + kept:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
        with RunLock(run / "lock"):
            assert not any(p.exists() for p in stale)
            assert all(p.exists() for p in kept)
    finally:
        alive.kill()
        alive.wait()


def test_lock_if_free_holds_a_free_lock_and_yields_none_to_a_held_one(tmp_path):
    path = tmp_path / "lock"
    with lock_if_free(path) as lock:
        assert lock is not None and read_lock(path)["pid"] == os.getpid()
        with lock_if_free(path) as second:  # held (by this very process): not taken again
            assert second is None
        assert path.exists()  # the inner block did not release the outer lock
    assert not path.exists()  # released on leaving the block


@pytest.mark.parametrize(
    "text",
    ['{"pid": "abc"}', '{"pid": null}', "[]", '"str"', '{"pid": 99999999999999999999}',
     '{"pid": true}', '{"pid": -3}', '{"host": "h"}'],
)  # fmt: skip
def test_a_lock_naming_no_process_is_no_lock(tmp_path, text):
    """Not a cellbench writer's lock (it links its lock whole, with its own pid): readers see no
    lock, and the next writer takes it over, with no traceback."""
    from cellbench.runs.lock import lock_holder_alive

    path = tmp_path / "lock"
    path.write_text(text)
    assert read_lock(path) is None
    assert not lock_holder_alive(path)
    with RunLock(path):
        assert read_lock(path)["pid"] == os.getpid()


def test_a_lock_without_its_start_time_is_assumed_held(tmp_path):
    """A live pid whose start the lock does not record cannot be proved to be a reused one:
    the lock is not broken."""
    import socket

    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(RunConflict, match="locked by pid"):
        RunLock(path).acquire()
    path.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "pid_started": "x"})
    )
    with pytest.raises(RunConflict, match="locked by pid"):
        RunLock(path).acquire()
