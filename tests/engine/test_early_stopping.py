"""best.pt and early stopping follow the shared direction rule (and a task's declaration)."""

from __future__ import annotations

from cellbench.config import EarlyStoppingConfig
from cellbench.engine.early_stopping import Monitor


def test_an_mse_is_minimised_for_best_pt():
    # before the shared rule, "val_hv_mse" was maximised: best.pt kept the worst epoch
    monitor = Monitor(EarlyStoppingConfig(monitor="val_hv_mse"), "val_hv_mse")
    assert monitor.state.mode == "min"
    assert monitor.update(1, 0.5) and monitor.update(2, 0.1) and not monitor.update(3, 0.3)
    assert monitor.state.best() == {
        "metric": "val_hv_mse",
        "mode": "min",
        "value": 0.1,
        "epoch": 2,
    }


def test_a_task_declaration_and_an_explicit_mode_decide_before_the_rule():
    declared = Monitor(EarlyStoppingConfig(), "val_spread", {"spread": "min"})
    assert declared.state.mode == "min"
    explicit = Monitor(EarlyStoppingConfig(mode="max"), "val_loss", {"loss": "min"})
    assert explicit.state.mode == "max"


def test_an_undefined_value_is_neither_best_nor_a_bad_epoch():
    monitor = Monitor(EarlyStoppingConfig(patience=1), "val_bpq")
    assert monitor.update(1, 0.5)
    for epoch in (2, 3, 4):  # a val fold without nuclei: NaN, then null from a reloaded row
        assert not monitor.update(epoch, float("nan") if epoch < 4 else None)
        assert not monitor.should_stop()
    assert monitor.state.best_value == 0.5 and monitor.state.bad_epochs == 0
    assert not monitor.update(5, 0.4) and monitor.should_stop()  # a real worse value counts
