"""The event fields readers use: a wrong type makes the line unusable, anything else passes."""

from __future__ import annotations

import pytest

from cellbench.runs.schema import event_problem

GOOD = [
    {"kind": "run_start", "time": 1.0, "task": "classify", "resumed": False, "start_epoch": 0},
    {"kind": "epoch", "time": 2.0, "epoch": 1, "train_loss": "nan", "val_loss": float("inf"),
     "metrics": {"val_accuracy": 0.5, "val_f1": None}, "best": {"metric": "val_loss",
     "value": 0.3, "epoch": 1}},
    {"kind": "step", "epoch": 1, "step": 2, "loss": 0.1},
    {"kind": "memory", "device": "cpu", "allocated": None, "rss": 5e8},
    {"kind": "run_end", "status": "completed", "best": None, "signal": None},
    {"kind": "a_future_kind", "anything": [1, 2]},  # a newer cellbench: no reader needs it
    {"kind": "epoch", "epoch": 3, "extra": {"x": "y"}},  # fields no reader uses
]  # fmt: skip

BAD = [
    ([1, 2], "not a JSON object (list)"),
    ("text", "not a JSON object (str)"),
    ({"epoch": 1}, "kind: expected a string, got None"),
    ({"kind": "epoch", "epoch": "x"}, "epoch event: epoch: expected an integer >= 1, got 'x'"),
    ({"kind": "epoch", "epoch": None}, "epoch event without 'epoch'"),
    ({"kind": "epoch", "epoch": True}, "epoch event: epoch: expected an integer >= 1, got True"),
    ({"kind": "epoch", "epoch": 1, "time": float("inf")}, "epoch event: time: expected a finite"
     " number, got inf"),
    ({"kind": "epoch", "epoch": 1, "best": {"value": "high"}}, "epoch event: best: expected a "
     "mapping {metric: string, mode: min|max, value: number, epoch: integer}, got "
     "{'value': 'high'}"),
    ({"kind": "epoch", "epoch": 1, "metrics": [0.5]}, "epoch event: metrics: expected a mapping"
     " of numbers, got [0.5]"),
    ({"kind": "run_end"}, "run_end event without 'status'"),
    ({"kind": "run_start", "resumed": "yes"}, "run_start event: resumed: expected true or "
     "false, got 'yes'"),
    ({"kind": "memory", "rss": -1}, "memory event: rss: expected a byte count, got -1"),
]  # fmt: skip


@pytest.mark.parametrize("event", GOOD)
def test_usable_events_pass(event):
    assert event_problem(event) is None


@pytest.mark.parametrize(("event", "problem"), BAD)
def test_each_wrong_type_is_named(event, problem):
    assert event_problem(event) == problem
