"""The run lock: a second writer is refused with the holder's pid; a dead holder's lock is taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cellbench.errors import RunConflict
from cellbench.runs.lock import RunLock, read_lock


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
