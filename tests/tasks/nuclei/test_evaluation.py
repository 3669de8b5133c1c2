"""Nuclei run evaluation: the PanNuke report into eval/, frozen post-processing said and used,
tuning on the val fold only, the training fold refused, the export re-scored identically."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cellbench.errors import RunConflict, UsageError
from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]


def test_eval_writes_the_pannuke_report_and_says_the_parameters_are_defaults(nuclei_run, tmp_path):
    from cellbench.runs.events import read_events
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run

    own = nuclei_run.copy(tmp_path)
    result = evaluate_nuclei_run(own.run, split="test")
    assert result["fold"] == 3 and result["split"] == "test" and result["tiles"] == 10
    metrics = result["metrics"]
    for key in ("bPQ", "mPQ", "bPQ_image_avg", "mPQ_plus", "dice", "aji", "per_type", "per_tissue"):
        assert key in metrics
    assert 0 <= metrics["dice"] <= 1
    assert result["postproc"]["source"] == "default"
    assert "never tuned" in result["postproc"]["description"]
    saved = json.loads((own.run.eval_dir / "test-best.json").read_text())
    assert saved["metrics"] == metrics
    rows = (own.run.eval_dir / "tiles_test-best.csv").read_text().splitlines()
    assert len(rows) == 1 + 10 and rows[0].startswith("fold,tile,tissue")
    (event,) = read_events(own.run.events, kind="eval")[-1:]
    assert event["split"] == "test" and event["postproc"] == "default"


def test_training_fold_is_refused_unless_allow_leak(nuclei_run, tmp_path):
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run

    own = nuclei_run.copy(tmp_path)
    with pytest.raises(UsageError, match="fold 1 is the fold this run trained on"):
        evaluate_nuclei_run(own.run, fold=1)
    assert not own.run.eval_dir.exists() or not list(own.run.eval_dir.glob("*.json"))
    result = evaluate_nuclei_run(own.run, fold=1, allow_leak=True)
    assert result["leak"] is True and (own.run.eval_dir / "fold1-best.json").is_file()


def test_tuning_uses_the_val_fold_freezes_and_later_evaluations_say_so(nuclei_run, tmp_path):
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run
    from cellbench.tasks.nuclei.postproc_tune import load_frozen

    own = nuclei_run.copy(tmp_path)
    tuned = evaluate_nuclei_run(own.run, split="test", tune=True)
    assert tuned["tuning"]["folds"] == [2]  # split 1: fold 2 validates; the test fold is never seen
    assert tuned["tuning"]["bPQ"] >= tuned["tuning"]["default_bPQ"]
    frozen = load_frozen(own.run.root)
    assert frozen.info["folds"] == [2] and frozen.info["split"] == "val"
    later = evaluate_nuclei_run(own.run, split="test")
    assert later["postproc"]["source"] == "tuned"
    assert later["postproc"]["params"] == frozen.params.to_dict()
    assert "tuned on the val fold 2" in later["postproc"]["description"]


def test_export_is_rescored_by_eval_pannuke_to_identical_numbers(nuclei_run, tmp_path):
    from cellbench.cli.app import app

    own = nuclei_run.copy(tmp_path)
    runner = CliRunner()
    out = tmp_path / "export"
    result = runner.invoke(
        app,
        ["eval", "--run", "dig", "--split", "test", "--export", str(out), "--json"]
        + ["--runs-dir", str(own.runs)],
    )
    assert result.exit_code == 0, result.output[-2000:]
    evaluated = json.loads(result.stdout)["metrics"]
    rescored = runner.invoke(
        app, ["eval", "pannuke", "--true", str(out / "true"), "--pred", str(out / "pred"), "--json"]
    )
    assert rescored.exit_code == 0, rescored.output[-2000:]
    again = json.loads(rescored.stdout)
    for key in ("bPQ", "mPQ", "bPQ_image_avg", "mPQ_image_avg", "mPQ_plus", "dice", "aji"):
        assert again[key] == evaluated[key], key
    assert again["per_type"] == evaluated["per_type"]

    # the leak refusal through the CLI: exit 2, one line
    leak = runner.invoke(app, ["eval", "--run", "dig", "--fold", "1", "--runs-dir", str(own.runs)])
    assert leak.exit_code == 2 and "--allow-leak" in leak.stderr


def test_tuning_a_run_that_is_being_trained_is_refused_and_freezes_nothing(nuclei_run, tmp_path):
    """postproc.json tuned on a best.pt the live training later replaces would be frozen into the
    run for every later eval and predict, fitted to a checkpoint the run no longer has."""
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run

    own = nuclei_run.copy(tmp_path)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        own.run.lock.write_text(json.dumps({"pid": trainer.pid, "host": socket.gethostname()}))
        with pytest.raises(RunConflict, match="being trained"):
            evaluate_nuclei_run(own.run, split="val", tune=True)
        assert not (own.run.root / "postproc.json").exists()
    finally:
        trainer.kill()
        trainer.wait()
    own.run.lock.unlink()  # the training ended: tuning goes ahead
    assert evaluate_nuclei_run(own.run, split="val", tune=True)["tuning"] is not None


def test_eval_workers_2_puts_two_worker_processes_on_one_evaluation(nuclei_run, tmp_path):
    """One pool per evaluation, fed across the model batches (it was one pool per batch: one
    chunk, so one worker, whatever --workers said); the numbers do not depend on it."""
    from cellbench.cli.app import app

    own = nuclei_run.copy(tmp_path)
    runner = CliRunner()
    results = {}
    for workers in ("1", "2"):
        result = runner.invoke(
            app,
            ["eval", "--run", "dig", "--split", "test", "--workers", workers, "--json"]
            + ["--batch-size", "4", "--runs-dir", str(own.runs)],
        )
        assert result.exit_code == 0, result.output[-2000:]
        results[workers] = json.loads(result.stdout)
    assert results["1"]["postproc_processes"] == 1  # this process
    assert results["2"]["postproc_processes"] == 2
    assert results["2"]["metrics"] == results["1"]["metrics"]


def test_an_online_features_run_evaluates_on_the_device_asked_not_train_device(
    nuclei_run, tmp_path
):
    """--online-features built the backbone on train.device whatever eval's --device said: on a
    GPU machine the tokens landed on CUDA and the decoder on the CPU. The run's saved config says
    train.device=meta here (nothing computes there): only the device asked can work."""
    from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run
    from tests.helpers_nuclei_run import make_online_run

    online = make_online_run(nuclei_run, tmp_path)
    result = evaluate_nuclei_run(online.run, split="test", device="cpu")
    assert result["device"] == "cpu" and 0 <= result["metrics"]["dice"] <= 1
