"""cellbench.runs.inputs: differences between a recorded identity and today's, by field."""

from __future__ import annotations

from cellbench.runs.inputs import differences


def test_differences_name_each_changed_field_and_fold():
    before = {
        "features": {
            "path": "/s/features/t",
            "weights sha256": "a" * 64,
            "blocks": [1, 3],
            "source folds": {"1": "x", "2": "y"},
        }
    }
    now = {
        "features": {
            "path": "/s/features/t",
            "weights sha256": "b" * 64,
            "blocks": [1, 3],
            "source folds": {"1": "x", "2": "z", "3": "new"},  # a new fold is no change
        }
    }
    changes = differences(before, now)
    assert len(changes) == 2
    assert changes[0].startswith("features weights sha256: aaaaaaaaaaaa… -> bbbbbbbbbbbb…")
    assert changes[1] == "features source folds 2: y -> z"
    assert differences(before, {}) == ["features: /s/features/t is gone"]
    # the folder is there, its manifest is not: one line, not every field "-> null"
    missing = {"features": {"path": "/s/features/t", "manifest": None}}
    assert differences(before, missing) == [
        "features: /s/features/t/manifest.json is gone or unreadable"
    ]
    assert differences({}, now) == []  # nothing recorded: nothing to hold the run to
