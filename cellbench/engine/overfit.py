"""``--overfit-small N``: can the model memorise N training examples? (seeds/002, "overfit a batch")

The pipeline check a study starts with: if model + loss + optimizer cannot drive the loss of a
handful of examples to almost zero, a full training will not mean much. The N examples are a
seeded draw from the training split; the config drops everything that fights memorisation
(``Task.overfit_config``: no augmentation, weight decay, dropout, label smoothing, mixup, EMA,
schedule). Training runs in passes over the N examples (batches of ``min(N, batch_size)``);
after each pass the mean training loss of the pass is compared to ``checks.overfit_loss``.
It passes as soon as the loss is below, and fails when ``checks.overfit_max_steps`` optimizer
steps did not get there.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Subset

from cellbench.config import Config
from cellbench.engine.components import build_components
from cellbench.engine.seeding import epoch_seed
from cellbench.engine.step import eval_step
from cellbench.errors import UsageError
from cellbench.tasks.base import Task, TaskData

StepCallback = Callable[[int, float], None]


@dataclass
class OverfitResult:
    passed: bool
    examples: int
    steps: int
    final_loss: float
    threshold: float
    max_steps: int
    accuracy: float | None
    losses: list[float]  # mean loss of each pass
    time_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def small_subset(dataset, n: int, seed: int) -> Subset:
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:n].tolist()
    return Subset(dataset, indices)


def overfit_config(config: Config, task: Task, n: int) -> Config:
    plain = task.overfit_config(config)
    plain.train.batch_size = min(n, plain.train.batch_size)
    return plain


def overfit_small(
    config: Config,
    task: Task,
    n: int,
    on_pass: StepCallback | None = None,
    data: TaskData | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> tuple[OverfitResult, Any]:
    """Train on ``n`` examples; returns the result and the components (model, data) it used.

    ``data`` may be given pre-built from ``overfit_config(config, task, n)``.
    """
    plain = overfit_config(config, task, n)
    if data is None:
        data = task.build_data(plain)
    if n < 1:
        raise UsageError(f"--overfit-small {n}: need at least one example")
    subset = small_subset(data.train, n, plain.train.seed)
    data = dataclasses.replace(data, train=subset, val=subset)
    c = build_components(plain, task, data=data)
    if on_start is not None:
        on_start(c)
    threshold = config.checks.overfit_loss
    max_steps = config.checks.overfit_max_steps
    started = time.perf_counter()
    steps, losses, epoch = 0, [], 0
    loss_value = math.inf
    step = c.train_step
    while steps < max_steps and not loss_value < threshold:
        step.model.train()
        c.train_generator.manual_seed(epoch_seed(plain.train.seed, epoch))
        total, batches = torch.zeros((), device=c.device), 0
        for batch in c.train_loader:
            if steps >= max_steps:
                break
            inputs, targets = step.prepare(*c.task.split_batch(batch))
            total += step(inputs, targets, last=True).loss  # one optimizer step per batch
            batches += 1
            steps += 1
        loss_value = float(total) / max(batches, 1)
        losses.append(loss_value)
        epoch += 1
        if on_pass is not None:
            on_pass(steps, loss_value)
        if not math.isfinite(loss_value):
            break
    accuracy = _accuracy(c)
    result = OverfitResult(
        passed=loss_value < threshold,
        examples=len(subset),
        steps=steps,
        final_loss=loss_value,
        threshold=threshold,
        max_steps=max_steps,
        accuracy=accuracy,
        losses=losses,
        time_s=time.perf_counter() - started,
    )
    return result, c


@torch.no_grad()
def _accuracy(c) -> float | None:
    """Accuracy (eval mode) on the memorised examples, when the task reports one."""
    c.model.eval()
    metrics = c.task.metrics(c.data, c.device)
    for batch in c.val_loader:
        inputs, targets = c.eval_prepare(batch)
        outputs, terms = eval_step(
            c.model, c.eval_criterion, inputs, targets, autocast=c.precision.autocast
        )
        metrics.update(outputs, targets, terms)
    return metrics.compute().get(c.task.overfit_metric)
