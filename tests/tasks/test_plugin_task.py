"""A task from outside cellbench (tests/tasks/plugin_pkg: the ``cellbench_toy`` package and its
``.dist-info`` with a ``cellbench.tasks`` entry point) works through the CLI with no change to
cellbench: ``train --task brightness``, ``eval``, ``predict``, ``runs show`` and a two-trial
``sweep``. Each command is a real ``cellbench`` process with the package on its PYTHONPATH, as
an installed plugin would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PLUGIN = Path(__file__).parent / "plugin_pkg"
ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.image_size=8", "data.max_samples=48", "train.batch_size=16", "train.lr=0.1"]


def cellbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(PLUGIN)]))
    sets = []
    if args[0] in ("train", "sweep"):
        for text in TINY:
            sets += ["--set", text]
    return subprocess.run(
        [sys.executable, "-m", "cellbench", *args, *sets, "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("plugin")
    ok(cellbench(where, "train", "--task", "brightness", "--epochs", "3", "--json"))
    return where


def test_the_entry_point_task_trains_and_its_run_is_listed(trained):
    shown = json.loads(ok(cellbench(trained, "runs", "show", "brightness", "--json")))
    assert shown["status"] == "completed"
    assert json.dumps(shown).count("brightness") >= 1
    assert (trained / "runs" / "0001-brightness" / "checkpoints" / "best.pt").is_file()


def test_eval_runs_the_tasks_own_evaluation(trained):
    report = json.loads(ok(cellbench(trained, "eval", "--run", "brightness", "--split", "test",
                                     "--json")))  # fmt: skip
    assert report["split"] == "test" and report["num_samples"] == 48
    assert report["metrics"]["accuracy"] > 0.9  # dark and bright are easy once trained
    assert (trained / "runs" / "0001-brightness" / "eval" / "test-best.json").is_file()
    refused = cellbench(trained, "eval", "--run", "brightness", "--tune-postproc")
    assert refused.returncode == 2 and "not an option of brightness runs" in refused.stderr


def test_predict_gives_the_tasks_typed_predictions(trained):
    dark, bright = trained / "dark.png", trained / "bright.png"
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(dark)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(bright)
    rows = json.loads(ok(cellbench(trained, "predict", "--run", "brightness", str(dark),
                                   str(bright), "--json")))  # fmt: skip
    assert [r["label"] for r in rows] == ["dark", "bright"]
    table = ok(cellbench(trained, "predict", "--run", "brightness", str(bright)))
    assert "bright" in table and "probability" in table


def test_a_two_trial_sweep_trains_the_plugin_task(tmp_path):
    out = ok(cellbench(tmp_path, "sweep", "--task", "brightness", "--grid", "train.lr=0.05,0.1",
                       "--epochs", "2", "--workers", "1", "--name", "toy", "--json"))  # fmt: skip
    board = json.loads(out)
    assert [r["status"] for r in board["rows"]] == ["completed", "completed"]
    from cellbench.runs.store import RunStore

    assert len(RunStore(tmp_path / "runs").runs()) == 2


def test_an_unknown_task_names_the_plugin_task_in_its_list(tmp_path):
    result = cellbench(tmp_path, "train", "--task", "brightnes")
    assert result.returncode == 2 and "did you mean 'brightness'" in result.stderr
