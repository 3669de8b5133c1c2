"""Exponential learning-rate range test (Smith 2015; the fast.ai / torch-lr-finder procedure).

Procedure: for ``steps`` mini-batches the lr grows geometrically from ``start_lr`` to ``end_lr``
(``lr_i = start * (end/start) ** (i / (steps - 1))``, each param group scaled by its timm
``lr_scale``); one optimizer step per batch; the loader is cycled if it runs out.

Smoothing: an exponential moving average of the loss with ``beta`` (default 0.98) and bias
correction, ``avg_i = beta * avg_{i-1} + (1 - beta) * loss_i`` and
``smoothed_i = avg_i / (1 - beta ** (i + 1))`` (without the correction the first points are
pulled toward 0).

Divergence stop: the test ends early when the smoothed loss exceeds ``diverge`` (4) times the
best smoothed loss so far, or the loss is not finite.

Suggestion rule: the lr of the steepest descent of the smoothed curve, i.e. the most negative
``d smoothed / d log10(lr)``, searched between the first 10% of the points (skipped: the EMA is
still settling) and the minimum of the smoothed curve (beyond it the loss is already rising).
When that window has fewer than 3 points, the rule falls back to ``min-loss lr / 10``.

Under ``train.amp=fp16`` the steps go through the run's ``GradScaler`` like training steps
(scaled backward, a step skipped when fp16 gradients overflow, scale update).

The model, the optimizer and the grad scaler are restored to their exact states afterwards
(weights, buffers, optimizer moments and lr, loss scale), and so are the global RNG states, so a
range test leaves no trace.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellbench.atomic import atomic_write, atomic_write_json, atomic_write_text
from cellbench.engine.seeding import capture_rng, restore_rng
from cellbench.engine.step import TrainStep

RULE = "steepest descent of the smoothed loss vs log10(lr), between 10% of the points and the min"
SMOOTHING = "bias-corrected exponential moving average of the loss"


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    min_loss_lr: float | None
    stopped_early: bool
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "steps_run": len(self.lrs),
            "stopped_early": self.stopped_early,
            "reason": self.reason,
            "rule": RULE,
            "smoothing": SMOOTHING,
            **self.settings,
        }


def smooth(losses: Iterable[float], beta: float) -> list[float]:
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


SKIP_END = 5


def suggest_lr(lrs: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(suggestion, lr at the smoothed minimum) by the documented rule."""
    if len(lrs) < 2:
        return None, None
    values = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return None, None
    low = int(np.nanargmin(np.where(finite, values, np.nan)))
    min_lr = float(lrs[low])
    start = max(1, len(lrs) // 10)
    if low - start + 1 >= 3:
        window = values[start : low + 1]
        slope = np.gradient(window, np.log10(np.asarray(lrs[start : low + 1])))
        # The smoothed curve lags the raw loss, so its slope is often steepest right at its
        # minimum, where training already diverges: the last SKIP_END points are not candidates
        # (torch-lr-finder skips the same number by default).
        candidates = slope[: max(1, len(slope) - SKIP_END)]
        return float(lrs[start + int(np.argmin(candidates))]), min_lr
    return min_lr / 10, min_lr


def _endless(loader: Iterable):
    # re-iterates the loader (a new shuffle each pass) instead of itertools.cycle, which would
    # keep every batch of the first pass in memory
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr range test: the training loader yields no batch")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable,
    device: torch.device | str = "cpu",
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    autocast: Callable[[], Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    batch_transform: Callable | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    split_batch: Callable[[Any], tuple[Any, Any]] | None = None,
) -> LRFindResult:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr range: need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if steps < 2:
        raise ValueError(f"lr range: need at least 2 steps, got {steps}")
    device = torch.device(device)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    rng_state = capture_rng()
    was_training = model.training
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    stopped_early, reason = False, f"{steps} steps"
    ratio = end_lr / start_lr
    batches = _endless(loader)
    # the engine's one step (no clipping, no accumulation: one optimizer step per lr)
    step = TrainStep(
        model,
        criterion,
        optimizer,
        device,
        autocast=autocast,
        scaler=scaler,
        batch_transform=batch_transform,
    )
    try:
        model.train()
        for i in range(steps):
            lr = start_lr * ratio ** (i / (steps - 1))
            _set_lr(optimizer, lr)
            batch = next(batches)
            inputs, targets = split_batch(batch) if split_batch is not None else batch
            value = float(step(*step.prepare(inputs, targets), last=True).loss)
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(math.inf)
                stopped_early, reason = True, f"loss not finite at lr {lr:.3g}"
                break
            avg = beta * avg + (1 - beta) * value
            current = avg / (1 - beta ** (i + 1))
            smoothed.append(current)
            if on_step is not None:
                on_step(i, lr, current)
            best = min(best, current)
            if i > 0 and current > diverge * best:
                stopped_early, reason = True, f"diverged at lr {lr:.3g} (> {diverge:g}x best loss)"
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        if scaler is not None:
            scaler.load_state_dict(scaler_state)
        restore_rng(rng_state)
        model.train(was_training)
    suggestion, min_lr = suggest_lr(lrs, smoothed)
    settings = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps, "beta": beta}
    settings["diverge"] = diverge
    return LRFindResult(lrs, losses, smoothed, suggestion, min_lr, stopped_early, reason, settings)


def save_lr_find(result: LRFindResult, folder: str | Path) -> dict[str, Path]:
    """``lr_find.csv`` (step, lr, loss, smoothed), ``lr_find.png`` and ``lr_find.json``."""
    folder = Path(folder)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed"])
    for i, (lr, loss, sm) in enumerate(
        zip(result.lrs, result.losses, result.smoothed, strict=True)
    ):
        writer.writerow([i, repr(lr), repr(loss), repr(sm)])
    paths = {
        "csv": atomic_write_text(folder / "lr_find.csv", buffer.getvalue()),
        "json": atomic_write_json(folder / "lr_find.json", result.summary()),
    }
    paths["png"] = atomic_write(folder / "lr_find.png", lambda fh: _plot(result, fh), mode="wb")
    return paths


def _plot(result: LRFindResult, fh) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    finite = [
        (lr, s) for lr, s in zip(result.lrs, result.smoothed, strict=True) if math.isfinite(s)
    ]
    if finite:
        ax.plot(*zip(*finite, strict=True), color="C0", linewidth=2, label="smoothed")
        top = max(s for _, s in finite)
        low = min(s for _, s in finite)
        ax.set_ylim(low - 0.05 * (top - low + 1e-12), top + 0.1 * (top - low + 1e-12))
    if result.suggestion:
        ax.axvline(
            result.suggestion,
            color="C3",
            linestyle="--",
            label=f"suggested {result.suggestion:.2g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(fh, format="png")
