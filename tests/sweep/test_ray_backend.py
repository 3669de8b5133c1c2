"""The Ray Tune backend on local Ray: the same trials, run folders and leaderboard shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore
from cellbench.sweep.leaderboard import CSV_COLUMNS
from cellbench.sweep.phases import resolve_phase
from cellbench.sweep.spec import from_command_line
from tests.sweep.conftest import tiny_sets


@pytest.mark.slow
def test_ray_backend_runs_the_same_trials_into_ordinary_runs(tmp_path, shapes):
    pytest.importorskip("ray.tune", reason="the ray extra (pip install 'cellbench[ray]')")
    grid = ["--grid", "train.lr=1e-3,3e-3"]
    argv = [
        sys.executable, "-m", "cellbench", "sweep", "--profile", "demo", *tiny_sets(shapes),
        *grid, "--epochs", "2", "--workers", "2", "--name", "onray", "--backend", "ray",
        "--asha", "--runs-dir", str(tmp_path / "runs"), "--json",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads(proc.stdout)  # Ray's own tables went to stderr

    # the trials the local pool would run, under the same names
    spec = from_command_line("demo", [], ["train.lr=1e-3,3e-3"], None, 2, "onray")
    expected = [t.name for t in resolve_phase(spec, spec.phases[0], [], [])]
    runs = RunStore(tmp_path / "runs").runs()
    assert sorted(r.name for r in runs) == sorted(expected)
    assert set(board) == {"sweep", "status", "metric", "mode", "rows", "best"}
    assert len(board["rows"]) == 2 and set(CSV_COLUMNS) - {"rank"} <= set(board["rows"][0])
    # ASHA may stop the worse trial after its first epoch: it is then recorded as pruned
    assert {r["status"] for r in board["rows"]} <= {"completed", "pruned"}
    assert "completed" in {r["status"] for r in board["rows"]}
    for run in runs:
        assert read_events(run.events, kind="run_end")  # every trial process ended cleanly
    assert board["best"]["command"].startswith("cellbench train --profile demo")
