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
