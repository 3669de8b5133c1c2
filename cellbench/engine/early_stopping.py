"""The monitored metric: which epoch is best (``best.pt``) and when to stop early.

Both read ``train.early_stopping.monitor`` (a history column such as ``val_loss`` or
``val_accuracy``; a bare metric name like ``accuracy`` means its ``val_`` column) and ``mode``
(``auto``: the task's declared direction, else the shared rule of ``cellbench.runs.direction``:
``min`` for losses, errors, MSE, ECE..., ``max`` for any other).
``best.pt`` follows any strict improvement; early stopping counts epochs without an improvement
larger than ``min_delta`` and stops after ``patience`` of them (``patience: null`` = never).
An undefined value (NaN, e.g. no nucleus of the family in the val fold) is ignored by both.
Their state is plain numbers, saved in every checkpoint so a resumed run stops at the same epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cellbench.config import EarlyStoppingConfig
from cellbench.errors import UsageError
from cellbench.runs.direction import metric_mode


def resolve_monitor(name: str, columns: list[str]) -> str:
    if name in columns:
        return name
    if f"val_{name}" in columns:
        return f"val_{name}"
    raise UsageError(
        f"train.early_stopping.monitor={name}: not a metric of this task "
        f"(available: {', '.join(c for c in columns if c != 'epoch')})"
    )


def resolve_mode(mode: str, metric: str, declared: Mapping[str, str] | None = None) -> str:
    if mode != "auto":
        return mode
    return metric_mode(metric, declared)


def _better(value: float, reference: float | None, mode: str, margin: float = 0.0) -> bool:
    if not math.isfinite(value):
        return False
    if reference is None:
        return True
    return value < reference - margin if mode == "min" else value > reference + margin


@dataclass
class MonitorState:
    metric: str
    mode: str
    best_value: float | None = None
    best_epoch: int | None = None
    # early stopping keeps its own reference: the last value that beat it by more than min_delta
    stop_reference: float | None = None
    bad_epochs: int = 0

    def best(self) -> dict[str, Any]:
        # the mode travels with the value: readers (sweeps, the TUI) rank runs the way each run
        # chose its best.pt, without re-deriving it from the metric's name
        return {
            "metric": self.metric,
            "mode": self.mode,
            "value": self.best_value,
            "epoch": self.best_epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


class Monitor:
    def __init__(
        self,
        config: EarlyStoppingConfig,
        metric: str,
        declared: Mapping[str, str] | None = None,
    ):
        self.config = config
        mode = resolve_mode(config.mode, metric, declared)
        self.state = MonitorState(metric=metric, mode=mode)

    def update(self, epoch: int, value: float | None) -> bool:
        """Record an epoch's value; True when it is the best so far (write ``best.pt``)."""
        s = self.state
        if value is None or not math.isfinite(value):
            # undefined (a val fold without a nucleus of the family): neither a best nor a bad
            # epoch — comparing NaN would say "worse" and stop a run for lack of data
            return False
        improved = _better(value, s.best_value, s.mode)
        if improved:
            s.best_value, s.best_epoch = value, epoch
        if _better(value, s.stop_reference, s.mode, self.config.min_delta):
            s.stop_reference, s.bad_epochs = value, 0
        else:
            s.bad_epochs += 1
        return improved

    def should_stop(self) -> bool:
        patience = self.config.patience
        return patience is not None and self.state.bad_epochs >= patience

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = MonitorState(**state)
