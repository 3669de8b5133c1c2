"""Optimizer and LR schedule through timm's factories, and backbone freezing.

``timm.optim.create_optimizer_v2`` builds the parameter groups: no weight decay on biases and
norm parameters, and with ``train.layer_decay`` one group per depth whose ``lr_scale`` is
``layer_decay ** (max_depth - depth)``. The scale is applied by timm's schedulers (they multiply
each group's lr by its ``lr_scale``), which is why even "no schedule" goes through timm's
``constant`` scheduler when layer decay is on.

The schedule is stepped once per epoch (timm's default, ``scheduler.step(epoch + 1)`` after each
epoch): warmup and decay are counted in epochs, and a resumed run lands on exactly the lr it left.
"""

from __future__ import annotations

import torch
from torch import nn

from cellbench.config import TrainConfig
from cellbench.errors import UsageError


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    # Called with every parameter trainable: timm leaves frozen parameters out of its groups,
    # and a backbone frozen for the first epochs must still be in the optimizer when it thaws.
    from timm.optim import create_optimizer_v2

    kwargs = {}
    if train.optimizer.lower() in ("sgd", "nesterov", "momentum", "rmsprop", "rmsproptf"):
        kwargs["momentum"] = train.momentum
    try:
        return create_optimizer_v2(
            model,
            opt=train.optimizer,
            lr=train.lr,
            weight_decay=train.weight_decay,
            layer_decay=train.layer_decay,
            **kwargs,
        )
    except (AssertionError, ValueError) as exc:
        raise UsageError(f"train.optimizer={train.optimizer}: {exc}") from exc


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, epochs: int):
    """A timm scheduler stepped per epoch, or None when there is nothing to schedule."""
    from timm.scheduler import create_scheduler_v2

    sched = train.scheduler
    if sched == "none":
        if not train.layer_decay and not train.warmup_epochs:
            return None
        sched = "constant"  # applies warmup and the layer-decay lr scales, then holds
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=sched,
        num_epochs=epochs,
        decay_epochs=train.decay_epochs,
        decay_rate=train.decay_rate,
        min_lr=train.min_lr,
        warmup_lr=train.warmup_lr,
        warmup_epochs=train.warmup_epochs,
        step_on_epochs=True,
    )
    return scheduler


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group lr: with layer decay, the head's (the lr the user configured)."""
    return max(float(group["lr"]) for group in optimizer.param_groups)
