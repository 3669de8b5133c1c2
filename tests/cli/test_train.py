"""``cellbench train``: exit codes, --json, --fresh, --resume after SIGKILL, --lr-find, overfit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.classify.shapes import write_shapes_dataset
from cellbench.runs.events import follow_events, read_events
from cellbench.runs.store import RunStore
from tests.helpers_nuclei import TINY_NUCLEI, nuclei_features

__all__ = ["nuclei_features"]  # the fixture, imported for pytest

runner = CliRunner()
TINY = [
    "--set", "data.image_size=32",
    "--set", "train.batch_size=16",
    "--set", "train.log_every=2",
    "--set", "model.args={channels: [8, 16], hidden: 32}",
]  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data") / "shapes"
    write_shapes_dataset(root, n_per_class=16, image_size=32, seed=0)
    return root


def _train(shapes, runs, *args):
    argv = ["train", "--data", str(shapes), "--model", "simple_cnn", "--runs-dir", str(runs)]
    return runner.invoke(app, [*argv, *TINY, *args])


def test_train_json_prints_the_final_metrics(tmp_path, shapes):
    result = _train(shapes, tmp_path, "--epochs", "2", "--run", "demo", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["run"] == "0001-demo" and metrics["best"]["metric"] == "val_loss"
    assert "majority_accuracy" in metrics["baselines"]


def test_existing_run_exits_4_without_resume_or_fresh(tmp_path, shapes):
    assert _train(shapes, tmp_path, "--epochs", "1", "--run", "demo").exit_code == 0
    again = _train(shapes, tmp_path, "--epochs", "1", "--run", "demo")
    assert again.exit_code == 4
    assert "--resume" in again.stderr and "--fresh" in again.stderr
    fresh = _train(shapes, tmp_path, "--epochs", "1", "--run", "demo", "--fresh")
    assert fresh.exit_code == 0, fresh.output
    start = read_events(RunStore(tmp_path).resolve("demo").events, "run_start")[-1]
    assert "checkpoints" in start["reset"]["removed"]


def test_usage_and_missing_run_exit_codes(tmp_path, shapes):
    missing = runner.invoke(
        app, ["train", "--run", "nope", "--resume", "--runs-dir", str(tmp_path)]
    )
    assert missing.exit_code == 3 and "no run 'nope'" in missing.stderr
    both = _train(shapes, tmp_path, "--lr-find", "--overfit-small", "4")
    assert both.exit_code == 2
    bad_key = _train(shapes, tmp_path, "--set", "train.lrr=0.1")
    assert bad_key.exit_code == 2 and "train.lr" in bad_key.stderr
    bad_data = runner.invoke(
        app, ["train", "--data", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "r")]
    )
    assert bad_data.exit_code == 3 and not (tmp_path / "r").exists()


def test_overfit_small_exit_codes(tmp_path, shapes):
    ok = _train(shapes, tmp_path, "--overfit-small", "16", "--set", "train.lr=0.01", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["passed"] is True
    stuck = _train(
        shapes, tmp_path, "--overfit-small", "8", "--set", "train.lr=0",
        "--set", "checks.overfit_max_steps=3",
    )  # fmt: skip
    assert stuck.exit_code == 1 and "overfit-small failed" in stuck.stderr


def test_lr_find_prints_and_stores_the_suggestion(tmp_path, shapes):
    result = _train(shapes, tmp_path, "--lr-find", "--set", "train.lr_find.steps=25", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["suggestion"] > 0 and "suggested lr" in result.stderr
    run = RunStore(tmp_path).resolve(summary["run"])
    assert (run.root / "lr_find.png").is_file() and (run.root / "lr_find.csv").is_file()
    # the lr-find run has not trained: train goes straight on in it, and keeps the suggestion
    trained = runner.invoke(
        app, ["train", "--run", summary["run"], "--epochs", "1", "--runs-dir", str(tmp_path)]
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads(run.metrics.read_text())["lr_find"]["suggestion"] == summary["suggestion"]


def _kill_after_epoch(events_path, epoch: int, proc) -> None:
    """SIGKILL ``proc`` as soon as its ``epoch`` event for ``epoch`` is written, following the
    event stream from outside like ``cellbench runs watch`` would (last.pt precedes the event)."""
    deadline = time.time() + 120
    for event in follow_events(events_path, stop=lambda: proc.poll() is not None, poll=0.01):
        if event["kind"] == "epoch" and event["epoch"] == epoch:
            os.kill(proc.pid, signal.SIGKILL)
            return
        assert time.time() < deadline, f"epoch {epoch} never finished"
    raise AssertionError(f"training exited before epoch {epoch}: {proc.stderr.read()[-2000:]}")


def _train_killed_after_epoch(argv: list[str], runs, epoch: int = 2):
    """Start ``cellbench train`` (``argv`` after ``-m cellbench``, naming run ``killed``), SIGKILL
    it once epoch ``epoch`` is written; the killed run's folder."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellbench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed_dir = None
        deadline = time.time() + 120
        while killed_dir is None and time.time() < deadline and proc.poll() is None:
            killed_dir = RunStore(runs).find("killed")
            time.sleep(0.02)
        assert killed_dir is not None, proc.stderr.read()[-2000:]
        _kill_after_epoch(killed_dir.events, epoch, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return killed_dir


def _assert_resume_equals_whole(runs, killed_dir) -> None:
    """``--resume`` the killed run: its history and weights equal the uninterrupted ``whole``."""
    resumed = runner.invoke(app, ["train", "--run", "killed", "--resume", "--runs-dir", str(runs)])
    assert resumed.exit_code == 0, resumed.output
    reference = RunStore(runs).resolve("whole")
    assert killed_dir.history.read_text() == reference.history.read_text()
    a = torch.load(reference.last_checkpoint, weights_only=True)["model"]
    b = torch.load(killed_dir.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path, shapes):
    recipe = ["--epochs", "5", "--set", "data.hflip=0.5", "--set", "model.drop_rate=0.2"]
    whole = _train(shapes, tmp_path, *recipe, "--run", "whole")
    assert whole.exit_code == 0, whole.output

    argv = ["train", "--data", str(shapes), "--model", "simple_cnn"]
    argv += ["--runs-dir", str(tmp_path), "--run", "killed", *TINY, *recipe]
    killed_dir = _train_killed_after_epoch(argv, tmp_path)
    assert read_events(killed_dir.events, "run_end") == []  # died without a word
    # killed mid-run: at epoch 2, or a little later if the machine was slow to react
    assert 2 <= torch.load(killed_dir.last_checkpoint, weights_only=True)["epoch"] < 5

    _assert_resume_equals_whole(tmp_path, killed_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shapes):
    """A 3-epoch run trained without interruption: what a resumed run must equal."""
    runs = tmp_path_factory.mktemp("signal-reference")
    result = _train(shapes, runs, "--epochs", "3", "--run", "whole")
    assert result.exit_code == 0, result.output
    return RunStore(runs).resolve("whole")


def _signal_after_epoch(events_path, epoch: int, proc, signum: int) -> None:
    deadline = time.time() + 120
    for event in follow_events(events_path, stop=lambda: proc.poll() is not None, poll=0.01):
        if event["kind"] == "epoch" and event["epoch"] == epoch:
            os.kill(proc.pid, signum)
            return
        assert time.time() < deadline, f"epoch {epoch} never finished"
    raise AssertionError(f"training exited before epoch {epoch}: {proc.stderr.read()[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_sigterm_and_sighup_stop_like_ctrl_c_and_resume_exactly(
    tmp_path, shapes, uninterrupted, signum, code
):
    argv = [sys.executable, "-m", "cellbench", "train", "--data", str(shapes), "--epochs", "3"]
    argv += ["--model", "simple_cnn", "--runs-dir", str(tmp_path), "--run", "stopped"]
    proc = subprocess.Popen(
        [*argv, *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run = None
        deadline = time.time() + 120
        while run is None and time.time() < deadline and proc.poll() is None:
            run = RunStore(tmp_path).find("stopped")
            time.sleep(0.02)
        assert run is not None, proc.stderr.read()[-2000:]
        _signal_after_epoch(run.events, 1, proc, signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(signum).name
    # graceful: the documented exit code, run_end written, lock released, last epoch kept
    assert proc.returncode == code, proc.stderr.read()[-2000:]
    (end,) = read_events(run.events, "run_end")
    assert end["status"] == "interrupted" and end["signal"] == name
    assert end["reason"].startswith(name), end["reason"]
    assert not run.lock.exists()
    kept = torch.load(run.last_checkpoint, weights_only=True)["epoch"]
    assert 1 <= kept < 3
    assert json.loads(run.metrics.read_text())["signal"] == name

    resumed = runner.invoke(
        app, ["train", "--run", "stopped", "--resume", "--runs-dir", str(tmp_path)]
    )
    assert resumed.exit_code == 0, resumed.output
    assert run.history.read_text() == uninterrupted.history.read_text()
    a = torch.load(uninterrupted.last_checkpoint, weights_only=True)["model"]
    b = torch.load(run.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_task_organ_from_the_command_line(tmp_path, organ_features):
    result = runner.invoke(
        app,
        [
            "train",
            "--task",
            "organ",
            "--features",
            str(organ_features),
            "--epochs",
            "2",
            "--set",
            "organ.target=family",
            "--runs-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "organ" and metrics["calibration"]["temperature"] > 0
    assert RunStore(tmp_path).resolve("vit-demo-organ").best_checkpoint.is_file()
    # issue 15, point 8: the head is named as what it is (it was "simple_cnn", model.name's
    # default, in the banner, run_start and runs list)
    assert metrics["model"] == "organ_head" and "organ_head" in result.stderr
    listed = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path), "--json"])
    assert [run["model"] for run in json.loads(listed.stdout)] == ["organ_head"]


def test_family_typo_is_bad_usage_with_a_did_you_mean(tmp_path):
    result = runner.invoke(app, ["train", "--family", "digestiv", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "did you mean 'digestive'" in result.output


@pytest.mark.slow
def test_a_nuclei_run_resumes_exactly_after_sigkill(tmp_path, nuclei_features):
    recipe = [
        "--family", "digestive",
        "--features", str(nuclei_features),
        *[arg for s in TINY_NUCLEI for arg in ("--set", s)],
        "--epochs", "5",
        "--set", "eval.pq_every=3",
        "--set", "data.vflip=0.5",
        "--set", "data.rot90=true",
        "--set", "model.drop_rate=0.1",
    ]  # fmt: skip
    whole = runner.invoke(app, ["train", *recipe, "--run", "whole", "--runs-dir", str(tmp_path)])
    assert whole.exit_code == 0, whole.output

    argv = ["train", *recipe, "--run", "killed", "--runs-dir", str(tmp_path)]
    killed_dir = _train_killed_after_epoch(argv, tmp_path)
    assert 2 <= torch.load(killed_dir.last_checkpoint, weights_only=True)["epoch"] < 5

    _assert_resume_equals_whole(tmp_path, killed_dir)


def test_family_with_another_task_is_bad_usage(tmp_path):
    argv = ["train", "--family", "digestive", "--task", "classify", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and "excludes --task classify" in result.output
