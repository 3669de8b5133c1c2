"""A trial outlives no sweep: killed with SIGKILL, the sweep's trials still checkpoint and end
``interrupted`` (the launcher's parent-death signal), so a rerun can resume them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cellbench.runs.events import read_events
from cellbench.runs.lock import read_lock
from cellbench.runs.store import RunStore
from tests.sweep import conftest as sweep_fixtures
from tests.sweep.conftest import tiny_sets

shapes = sweep_fixtures.shapes  # the sweep tests' generated data, as a fixture here


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_a_trial_whose_sweep_is_killed_checkpoints_and_ends_interrupted(tmp_path, shapes):
    runs = tmp_path / "runs"
    args = ["train", "--profile", "demo", *tiny_sets(shapes), "--epochs", "5000",
            "--run", "orphan", "--runs-dir", str(runs)]  # fmt: skip
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys
        env = dict(os.environ, CELLBENCH_SWEEP_PARENT=str(os.getpid()))
        child = subprocess.Popen([sys.executable, "-m", "cellbench.cli.trial", *{args!r}],
                                 env=env, start_new_session=True)
        child.wait()
        """
    )
    sweep = subprocess.Popen([sys.executable, "-c", parent])
    store = RunStore(runs)
    child_pid = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = store.find("orphan")
            if run is not None and read_events(run.events, kind="epoch"):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the trial never finished an epoch")
        child_pid = (read_lock(run.lock) or {}).get("pid")
        sweep.send_signal(signal.SIGKILL)  # no handler, no forwarding: only the kernel's signal
        sweep.wait(timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not read_events(run.events, kind="run_end"):
            time.sleep(0.1)
        ends = read_events(run.events, kind="run_end")
        assert ends and ends[-1]["status"] == "interrupted"
        assert run.last_checkpoint.is_file()
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if child_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
