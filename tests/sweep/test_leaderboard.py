"""Ranking: configs by the mean of their seeds' best values, in the metric's own direction."""

from __future__ import annotations

import pytest

from cellbench.sweep.leaderboard import rank_groups


def _row(group, value, mode, metric="val_accuracy"):
    return {"group": group, "value": value, "mode": mode, "metric": metric}


def test_higher_is_better_metrics_rank_the_highest_mean_first():
    rows = [
        _row("a", 0.80, "max"),
        _row("a", 0.90, "max"),
        _row("b", 0.88, "max"),
        _row("c", None, None),  # a failed trial: not ranked
    ]
    groups = rank_groups(rows)
    assert [g["group"] for g in groups] == ["b", "a"]
    a = groups[1]
    assert a["mean"] == pytest.approx(0.85) and a["n"] == 2
    assert a["std"] == pytest.approx(0.0707, abs=1e-4)  # sample std over the seeds
    assert [r["value"] for r in a["rows"]] == [0.90, 0.80]  # its best seed first
    assert groups[0]["std"] is None  # one seed: no spread


def test_losses_rank_the_lowest_mean_first():
    rows = [_row("a", 0.5, "min", "val_loss"), _row("b", 0.3, "min", "val_loss")]
    assert [g["group"] for g in rank_groups(rows)] == ["b", "a"]
    assert rank_groups([_row("a", None, None)]) == []


def test_a_trial_is_ranked_in_the_direction_its_run_recorded(tmp_path):
    """``run_end.best.mode`` is the run's own judgement (a task may declare a metric's direction
    against the name rule): the leaderboard takes it over re-deriving it from the name."""
    from cellbench.runs.events import EventWriter
    from cellbench.runs.store import RunStore
    from cellbench.sweep.leaderboard import outcome
    from cellbench.sweep.trials import Trial

    store = RunStore(tmp_path)
    run = store.create("s-t001")
    run.config.write_text("train: {early_stopping: {mode: auto}}\n")
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="m")
        best = {"metric": "val_score", "mode": "min", "value": 0.2, "epoch": 1}
        w.emit("epoch", epoch=1, best=best)
        w.emit("run_end", status="completed", best=best)
    trial = Trial(id="t001", name="s-t001", phase="grid", params={}, seed=None)
    row = outcome(store, trial, {"status": "completed"})
    assert (row["metric"], row["mode"], row["value"]) == ("val_score", "min", 0.2)
