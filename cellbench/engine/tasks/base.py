"""What a task gives the one training loop: data, model, losses, metrics, the monitored metric.

The loop (``cellbench.engine.trainer``) knows nothing of classes, masks or organs: it moves
``(inputs, targets)`` batches, calls the task's criterion, and feeds the task's metric
accumulator. A new task (organ head, nuclei decoders) subclasses ``Task`` and registers itself in
``cellbench.engine.tasks.get_task``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from cellbench.config import Config

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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


class MetricAccumulator:
    """Accumulates a split's loss and metrics on the device; ``compute`` syncs once."""

    def update(self, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """``{"loss": ..., <metric>: ...}`` over everything seen."""
        raise NotImplementedError


class Task:
    name: str = "base"
    # metric names (history columns are ``val_<name>``); the first is shown first
    metric_names: tuple[str, ...] = ()

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

    def metrics(self, data: TaskData, device: torch.device) -> MetricAccumulator:
        raise NotImplementedError

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
