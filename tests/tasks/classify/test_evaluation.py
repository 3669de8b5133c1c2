"""evaluate_run on a real tiny run: metrics agree with training and with its own predictions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cellbench.errors import BadInputError, UsageError
from cellbench.runs.events import read_events
from cellbench.runs.lock import RunLock
from cellbench.tasks.classify.evaluation import evaluate_run, expectation_warnings
from tests.helpers_eval import copy_runs, edit_checkpoint, trained_run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture
def run(template, tmp_path):
    return copy_runs(template, tmp_path)[1]


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_val_best_matches_the_engine_and_writes_every_file(run):
    result = evaluate_run(run, split="val", checkpoint="best")
    # the engine validated the same weights on the same split: same numbers
    best = json.loads(run.metrics.read_text())["best"]["metrics"]
    assert result["epoch"] == best["epoch"]
    assert result["metrics"]["accuracy"] == pytest.approx(best["val_accuracy"])
    assert result["metrics"]["macro_f1"] == pytest.approx(best["val_macro_f1"])
    assert result["metrics"]["loss"] == pytest.approx(best["val_loss"], rel=1e-5)

    files = {k: run.root / "eval" / v for k, v in {
        "json": "val-best.json",
        "per_class": "per_class_val-best.csv",
        "confusion": "confusion_val-best.png",
        "predictions": "predictions_val-best.csv",
    }.items()}  # fmt: skip
    assert {k: str(v) for k, v in files.items()} == result["files"]
    assert all(p.is_file() for p in files.values())
    assert not list(run.eval_dir.glob(".*.tmp"))
    with Image.open(files["confusion"]) as img:
        assert img.format == "PNG"
    assert json.loads(files["json"].read_text())["metrics"] == result["metrics"]


def test_accuracy_and_confusion_recomputed_from_the_predictions(run):
    result = evaluate_run(run, split="val")
    rows = read_csv(run.eval_dir / "predictions_val-best.csv")
    assert len(rows) == result["num_samples"] > 0
    hits = sum(r["true"] == r["predicted"] for r in rows)
    assert result["metrics"]["accuracy"] == pytest.approx(hits / len(rows))
    classes = result["classes"]
    cm = np.zeros((len(classes), len(classes)), dtype=int)
    for r in rows:
        cm[classes.index(r["true"]), classes.index(r["predicted"])] += 1
    assert cm.tolist() == result["confusion_matrix"]
    per_class = read_csv(run.eval_dir / "per_class_val-best.csv")
    assert [r["class"] for r in per_class] == classes
    assert [int(r["support"]) for r in per_class] == cm.sum(axis=1).tolist()
    assert all(r["source"].endswith(".png") for r in rows)


def test_eval_event_is_appended(run):
    evaluate_run(run, split="val")
    evaluate_run(run, split="test", checkpoint="last")
    events = read_events(run.events, kind="eval")
    assert [(e["split"], e["checkpoint"]) for e in events] == [("val", "best"), ("test", "last")]
    assert set(events[0]["metrics"]) >= {"loss", "accuracy", "macro_f1"}
    assert not run.lock.exists()  # the lock was only held while writing


def test_test_split_and_last_checkpoint(run):
    calls = []
    result = evaluate_run(
        run, split="test", checkpoint="last", batch_size=4, on_batch=lambda *a: calls.append(a)
    )
    assert result["split"] == "test" and result["checkpoint"] == "last"
    batches = -(-result["num_samples"] // 4)
    assert calls == [(i, batches) for i in range(1, batches + 1)]
    assert (run.eval_dir / "test-last.json").is_file()
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0


def test_run_without_test_split_is_refused(run):
    edit_checkpoint(run.best_checkpoint, config={"data": {"test_ratio": 0.0}})
    with pytest.raises(BadInputError, match="has no test split.*--split val"):
        evaluate_run(run, split="test")
    assert not run.eval_dir.exists()  # nothing half-written


def test_running_training_gets_files_but_no_event(run):
    before = len(read_events(run.events))
    with RunLock(run.lock):  # a live process (this one) holds the run, as a training does
        result = evaluate_run(run, split="val")
    assert result["event_written"] is False
    assert (run.eval_dir / "val-best.json").is_file()
    assert len(read_events(run.events)) == before


def test_metrics_outside_expect_warn(run):
    edit_checkpoint(run.best_checkpoint, config={"expect": {"accuracy": [1.5, 2.0]}})
    result = evaluate_run(run, split="val")
    (message,) = result["warnings"]
    assert "accuracy" in message and "[1.5, 2]" in message
    warnings = read_events(run.events, kind="warning")
    assert warnings[-1]["check"] == "expect" and warnings[-1]["message"] == message


def test_changed_classes_are_refused(run):
    edit_checkpoint(run.best_checkpoint, classes=["a", "b", "c", "d"])
    with pytest.raises(BadInputError, match="differ from the checkpoint"):
        evaluate_run(run, split="val")


def test_missing_and_torn_checkpoints_exit_3(run):
    run.last_checkpoint.write_bytes(run.last_checkpoint.read_bytes()[:1000])
    with pytest.raises(BadInputError, match="last.pt: cannot load checkpoint"):
        evaluate_run(run, checkpoint="last")
    run.best_checkpoint.unlink()
    with pytest.raises(BadInputError, match="best.pt"):
        evaluate_run(run)


def test_bad_split_is_usage_error(run):
    with pytest.raises(UsageError):
        evaluate_run(run, split="train")


def test_expectation_ranges_by_split():
    from cellbench.config import Config

    config = Config(
        expect={"accuracy": [0.9, 1.0], "val_macro_f1": [0.9, 1.0], "test_loss": [0, 1]}
    )
    metrics = {"accuracy": 0.5, "macro_f1": 0.5, "loss": 2.0}
    val = expectation_warnings(config, "val", metrics)
    test = expectation_warnings(config, "test", metrics)
    assert len(val) == 2 and any("expect.val_macro_f1" in m for m in val)
    assert len(test) == 2 and any("expect.test_loss" in m for m in test)
    assert expectation_warnings(config, "val", {"accuracy": 0.95, "macro_f1": 0.95}) == []
