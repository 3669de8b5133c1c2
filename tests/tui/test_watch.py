"""Incremental reading of run folders: growth, split and torn lines, replacement, status."""

from __future__ import annotations

import json

from cellbench.runs.events import EventWriter
from cellbench.runs.summary import summarize
from cellbench.tui.watch import RunStoreWatcher, RunWatcher, as_number

from .conftest import epoch_event, start_event, write_finished_run


def test_run_watcher_accumulates_a_finished_run(store):
    run = write_finished_run(store, "done")
    watcher = RunWatcher(run)
    assert watcher.poll() and watcher.version == 1
    assert not watcher.poll() and watcher.version == 1  # nothing new: nothing to re-render
    state = watcher.state
    assert watcher.status == "completed" and state.end["reason"] == "2 epochs"
    assert [(s.epoch, s.step) for s in state.steps] == [(1, 2), (1, 4), (2, 6), (2, 8)]
    assert [(e.epoch, e.val_loss) for e in state.epochs] == [(1, 1.0), (2, 0.5)]
    assert state.epochs[0].metrics == {"val_accuracy": 0.5}
    assert [m.rss for m in state.memory] == [5e8, 5e8] and not state.memory[0].cuda
    assert [(w.check, w.severity) for w in state.warnings] == [("initial_loss", "warning")]
    assert watcher.model == "simple_cnn" and watcher.epochs_planned == 3
    assert watcher.best == {"metric": "val_loss", "value": 0.5, "epoch": 2}
    # steps land at fractional epochs: 4 steps per epoch, the 2nd step of epoch 1 at x = 0.5
    assert watcher.steps_per_epoch() == 4
    assert watcher.step_curve()[0] == [0.5, 1.0, 1.5, 2.0]
    assert watcher.epoch_curve("val_loss") == ([1.0, 2.0], [1.0, 0.5])
    assert watcher.epoch_curve("val_accuracy") == ([1.0, 2.0], [0.5, 0.75])


def test_live_run_grows_between_polls(running_run):
    run, writer, history = running_run
    watcher = RunWatcher(run)
    watcher.poll()
    assert watcher.status == "running" and watcher.state.epochs == []
    writer.emit("memory", device="cuda:0", allocated=2**30, reserved=2**31, peak=3 * 2**29, rss=1)
    epoch_event(writer, history, 1, 0.8)
    writer.emit("warning", check="loss_decrease", severity="error", message="no decrease")
    assert watcher.poll()
    assert [e.epoch for e in watcher.state.epochs] == [1]
    assert watcher.state.memory[-1].cuda and watcher.state.memory[-1].reserved == 2**31
    assert watcher.state.warnings[-1].severity == "error"


def test_non_finite_losses_are_kept_as_nan_and_left_out_of_curves(running_run):
    run, writer, _ = running_run
    writer.emit("step", epoch=1, step=1, loss=1.0)
    writer.emit("step", epoch=1, step=2, loss=float("nan"))  # written as the string "nan"
    watcher = RunWatcher(run)
    watcher.poll()
    assert watcher.state.steps[1].loss != watcher.state.steps[1].loss  # NaN
    assert watcher.step_curve() == ([0.5], [1.0])
    assert as_number("inf") == float("inf") and as_number(True) is None


def test_resume_forgets_the_redone_epoch_and_fresh_starts_over(store):
    run = write_finished_run(store, "again", epochs=2)
    with EventWriter(run.events) as writer:
        start_event(writer, resumed=True, start_epoch=1)  # as if epoch 2 is redone
    watcher = RunWatcher(run)
    watcher.poll()
    assert [e.epoch for e in watcher.state.epochs] == [1]
    assert [s.epoch for s in watcher.state.steps] == [1, 1]
    assert len(watcher.state.warnings) == 1  # same attempt: its warnings stay
    with EventWriter(run.events) as writer:
        start_event(writer)  # --fresh: a new attempt
    watcher.poll()
    assert watcher.state.epochs == [] and watcher.state.warnings == [] and watcher.best is None


def test_status_follows_the_same_rules_as_runs_list(store, tmp_path):
    created = store.create("created")
    finished = write_finished_run(store, "finished")
    crashed = store.create("crashed")
    with EventWriter(crashed.events) as writer:
        start_event(writer)  # no run_end, no lock: the process died
    interrupted = store.create("interrupted")
    with EventWriter(interrupted.events) as writer:
        start_event(writer)
        writer.emit("run_end", status="interrupted", reason="Ctrl-C", best=None)
    for run, status in [
        (created, "created"),
        (finished, "completed"),
        (crashed, "crashed"),
        (interrupted, "interrupted"),
    ]:
        watcher = RunWatcher(run)
        watcher.poll()
        assert watcher.status == summarize(run).status == status


def test_running_turns_crashed_when_the_writer_dies_without_a_new_line(store):
    run = store.create("dies")
    with EventWriter(run.events) as writer:
        start_event(writer)
    # a lock file of a process that is gone (pid 2**22 + 1 is above Linux's pid_max default)
    run.lock.write_text(json.dumps({"pid": 4194305, "host": "elsewhere-not-this-host"}))
    watcher = RunWatcher(run)
    watcher.poll()
    assert watcher.status == "running"  # another host: cannot be checked, assumed alive
    run.lock.unlink()
    assert watcher.poll() and watcher.status == "crashed"


def test_store_watcher_sees_runs_come_grow_and_go(store):
    watcher = RunStoreWatcher(store.root)
    assert not watcher.poll() and watcher.watchers == {}
    first = write_finished_run(store, "first")
    changes = watcher.poll()
    assert changes.added == [first.root.name]
    assert not watcher.poll()  # nothing grew: a few stat calls, no change
    with EventWriter(first.events) as writer:
        writer.emit("eval", split="test", checkpoint="best", metrics={"accuracy": 0.9})
    assert watcher.poll().changed == [first.root.name]
    assert watcher.get(first.root.name).state.evals[-1]["metrics"] == {"accuracy": 0.9}
    second = write_finished_run(store, "second")
    assert list(watcher.poll().added) == [second.root.name]
    assert list(watcher.watchers) == [first.root.name, second.root.name]
    import shutil

    shutil.rmtree(first.root)
    assert watcher.poll().removed == [first.root.name]
    assert watcher.newest_running() is None
