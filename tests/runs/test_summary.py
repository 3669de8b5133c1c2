"""Run status, epochs and best metric derived from events."""

from __future__ import annotations

import json
import os

from cellbench.runs.events import EventWriter
from cellbench.runs.lock import RunLock
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize


def make_run(tmp_path, name="r"):
    return RunStore(tmp_path).create(name)


def test_created_run_without_events(tmp_path):
    assert summarize(make_run(tmp_path)).status == "created"


def test_completed_run(tmp_path):
    run = make_run(tmp_path)
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="simple_cnn")
        for epoch in (1, 2):
            w.emit(
                "epoch",
                epoch=epoch,
                best={"metric": "accuracy", "value": 0.5 * epoch, "epoch": epoch},
            )
        w.emit("warning", check="initial_loss", severity="warning", message="x")
        w.emit("run_end", status="completed", best={"metric": "accuracy", "value": 1.0, "epoch": 2})
    s = summarize(run)
    assert (s.status, s.task, s.model, s.epochs) == ("completed", "classify", "simple_cnn", 2)
    assert (s.best_metric, s.best_value, s.warnings) == ("accuracy", 1.0, 1)
    assert s.duration_s is not None and s.duration_s >= 0


def test_running_when_lock_is_live_and_crashed_when_not(tmp_path):
    run = make_run(tmp_path)
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify")
    with RunLock(run.lock):
        assert summarize(run).status == "running"
    assert summarize(run).status == "crashed"
    assert os.getpid()  # the lock above was ours and is released


def test_resume_continues_epochs_and_fresh_start_resets_them(tmp_path):
    run = make_run(tmp_path)
    with EventWriter(run.events) as w:
        w.emit("run_start", resumed=False)
        w.emit("epoch", epoch=1)
        w.emit("run_end", status="interrupted")
        w.emit("run_start", resumed=True)
        w.emit("epoch", epoch=2)
        w.emit("run_end", status="completed")
    assert (summarize(run).status, summarize(run).epochs) == ("completed", 2)
    with EventWriter(run.events) as w:
        w.emit("warning", check="no_decrease", severity="warning", message="old attempt")
        w.emit("run_start", resumed=False, reset={"removed": ["checkpoints/last.pt"]})
    s = summarize(run)
    assert (s.status, s.epochs, s.warnings) == ("crashed", 0, 0)


def test_duration_counts_training_only(tmp_path):
    run = make_run(tmp_path)
    events = [
        {"kind": "run_start", "time": 100.0, "resumed": False},
        {"kind": "epoch", "time": 110.0, "epoch": 1},
        {"kind": "run_end", "time": 112.0, "status": "interrupted"},
        {"kind": "run_start", "time": 5000.0, "resumed": True},  # resumed much later
        {"kind": "epoch", "time": 5010.0, "epoch": 2},
        {"kind": "run_end", "time": 5011.0, "status": "completed"},
        {"kind": "eval", "time": 9000.0, "split": "test"},  # evaluated the next day
    ]
    run.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = summarize(run)
    assert s.duration_s == 12.0 + 11.0
    assert s.started == 100.0


def test_best_keeps_the_mode_the_run_judged_it_by(tmp_path):
    run = make_run(tmp_path)
    best = {"metric": "val_hv_mse", "mode": "min", "value": 0.01, "epoch": 1}
    with EventWriter(run.events) as w:
        w.emit("run_start", task="nuclei", model="nuclei_decoder")
        w.emit("epoch", epoch=1, best=best)
        w.emit("run_end", status="completed", best=best)
    s = summarize(run)
    assert (s.best_metric, s.best_mode, s.best_value) == ("val_hv_mse", "min", 0.01)
    assert not s.damaged


def test_a_best_with_an_unknown_mode_marks_the_run_damaged(tmp_path):
    run = make_run(tmp_path)
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="m")
        w.emit("run_end", status="completed", best={"metric": "x", "mode": "up", "value": 1.0})
    assert summarize(run).damaged
