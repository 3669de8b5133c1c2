"""One rule for "lower is better"."""

from __future__ import annotations

import pytest

from cellbench.runs.direction import metric_is_minimised, metric_mode


@pytest.mark.parametrize(
    "name",
    ["val_loss", "train_loss_np_dice", "val_hv_mse", "test_ece", "val_error_rate", "val_nll"],
)
def test_costs_are_minimised(name):
    assert metric_is_minimised(name)


@pytest.mark.parametrize(
    "name", ["val_accuracy", "val_macro_f1", "val_np_dice", "val_bpq", "val_processed"]
)
def test_scores_are_maximised(name):
    assert not metric_is_minimised(name)


def test_a_declared_direction_wins_over_the_rule_with_or_without_the_split_prefix():
    assert metric_mode("val_hv_mse", {"hv_mse": "max"}) == "max"
    assert metric_mode("val_spread", {"val_spread": "min"}) == "min"
    with pytest.raises(ValueError):
        metric_is_minimised("val_x", {"x": "down"})
