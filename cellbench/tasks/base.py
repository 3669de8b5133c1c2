"""What a task gives the one training loop: data, model, losses, metrics, the monitored metric.

The loop (``cellbench.engine.trainer``) knows nothing of classes, masks or organs: it asks the
task to split a batch into ``(inputs, targets)`` (tensors or mappings of tensors), runs the one
step function (``cellbench.engine.step``), calls the task's criterion (a tensor or named terms
with the total under ``"loss"``), and feeds the task's metric accumulator. A new task subclasses
``Task`` and registers itself with ``@register_task("name")`` (``cellbench.tasks``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from cellbench.config import Config

BatchTransform = Callable[[Any, Any], tuple[Any, Any]]


class TaskData(Protocol):
    """What the loop reads of a task's data (``ClassificationData`` is one). A dataclass, so
    ``--overfit-small`` can ``dataclasses.replace`` its splits."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    classes: list[str]
    warnings: list[str]  # shown once at the start of a training
    class_counts: dict[str, dict[str, int]]  # split -> class name -> count

    @property
    def num_classes(self) -> int: ...


class LossSums:
    """Per-sample sums of a split's named loss terms on the device (batch mean x batch size).

    ``compute`` gives ``{"loss": ..., "loss_<term>": ...}``: the total and each other term."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: Mapping[str, torch.Tensor], n: int) -> None:
        for name, value in terms.items():
            total = self.sums.get(name)
            if total is None:
                total = self.sums[name] = torch.zeros((), dtype=torch.float64, device=self.device)
            total += value.detach().double() * n
        self.count += n

    def compute(self) -> dict[str, float]:
        if not self.sums:
            return {"loss": float("nan")}
        names = list(self.sums)
        values = torch.stack([self.sums[k] for k in names]).tolist()  # one sync
        out = {}
        for name, value in zip(names, values, strict=True):
            key = "loss" if name == "loss" else f"loss_{name}"
            out[key] = value / max(self.count, 1)
        return out


class MetricAccumulator:
    """Accumulates a split's loss terms and metrics on the device; ``compute`` syncs once."""

    def update(self, outputs: Any, targets: Any, losses: Mapping[str, torch.Tensor]) -> None:
        """``losses``: the eval criterion's named terms of this batch (the total under "loss")."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """``{"loss": ..., "loss_<term>": ..., <metric>: ...}`` over everything seen."""
        raise NotImplementedError


class Task:
    name: str = "base"
    # metric names (history columns are ``val_<name>``); the first is shown first
    metric_names: tuple[str, ...] = ()
    # named loss terms besides the total (columns ``train_loss_<term>``, ``val_loss_<term>``)
    loss_names: tuple[str, ...] = ()
    # the metric ``--overfit-small`` reports on the memorised examples (``accuracy`` field)
    overfit_metric: str = "accuracy"
    # explicit directions ("min"/"max") for metrics whose name the shared rule
    # (``cellbench.runs.direction``) does not decide the way this task means it
    metric_directions: dict[str, str] = {}

    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """A loader batch as ``(inputs, targets)``: each a tensor or a mapping of tensors.
        Only these are moved to the device; anything else in the batch stays on the host."""
        inputs, targets = batch
        return inputs, targets

    def configure(self, config: Config) -> None:
        """Called once with the run's config before anything is built (settings the task's
        other hooks need, e.g. how often an expensive metric runs)."""

    def build_data(self, config: Config) -> TaskData:
        raise NotImplementedError

    def build_model(self, config: Config, data: TaskData) -> nn.Module:
        raise NotImplementedError

    def train_criterion(self, config: Config, data: TaskData) -> nn.Module:
        """The loss the optimizer minimises (may expect soft targets, see ``batch_transform``)."""
        raise NotImplementedError

    def eval_criterion(self, config: Config, data: TaskData) -> nn.Module:
        """The plain loss reported as ``val_loss`` (no smoothing, no mixing)."""
        raise NotImplementedError

    def batch_transform(self, config: Config, data: TaskData) -> BatchTransform | None:
        """A per-batch transform applied on the device before the forward pass (e.g. mixup)."""
        return None

    def needs_even_batches(self, config: Config) -> bool:
        """True when ``batch_transform`` needs every batch the same (even) size: drop the last."""
        return False

    def metrics(
        self, data: TaskData, device: torch.device, epoch: int | None = None
    ) -> MetricAccumulator:
        """A fresh accumulator for one pass over a split; ``epoch`` (1-based) during training,
        None elsewhere (``--overfit-small``, ``eval``)."""
        raise NotImplementedError

    def epoch_findings(self, row: dict[str, Any], config: Config) -> list[Any]:
        """Task-specific sanity checks of an epoch's history row (``checks.Finding`` list);
        each check name fires once per run."""
        return []

    def expect_ranges(self, config: Config) -> dict[str, list[float]]:
        """The ``expect:`` ranges that apply to this run's final metrics."""
        return dict(config.expect or {})

    def expected_initial_loss(self, data: TaskData) -> float | None:
        """The loss of an untrained model (ln C for C balanced classes), or None."""
        return None

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Scores that need no model (majority class, uniform random)."""
        return {}

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        """Freeze/unfreeze the backbone (``train.freeze_backbone_epochs``); returns the number
        of parameter values changed."""
        raise NotImplementedError

    def overfit_config(self, config: Config) -> Config:
        """The config of ``--overfit-small``: no augmentation, no regularisation."""
        return config

    def finalize(self, config: Config, data: TaskData, run_dir, device) -> dict | None:
        """After a completed training: a task's closing report (files in ``eval/``); what it
        returns is merged into ``metrics.json``. None: nothing to add."""
        return None
