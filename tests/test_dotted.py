"""Nested mappings as dotted keys."""

from cellbench.dotted import flatten


def test_leaves_under_dotted_keys_and_empty_mappings_kept_only_when_asked():
    data = {"train": {"lr": 0.1, "sched": {"warmup": 1}}, "model": {}, "task": "classify"}
    assert flatten(data) == {"train.lr": 0.1, "train.sched.warmup": 1, "task": "classify"}
    assert flatten(data, keep_empty=True)["model"] == {}
    assert flatten({}) == {}
