"""Named sanity checks. Thresholds come from ``config.checks``; each finding becomes a ``warning``
event ``{check, severity, message}`` and a Rich line on stderr.

=================  =========  ===============================================================
check              when       fires when
=================  =========  ===============================================================
input_range        1st batch  inputs are not floating point, not finite, or outside
                              [checks.input_min, checks.input_max] (e.g. raw 0..255 pixels)
initial_loss       1st step   the first loss is farther than ``initial_loss_tolerance``
                              (relative) from ln(C): a mis-scaled head, wrong labels or loss
baselines          start      always (info): majority-class and uniform-random scores to beat
non_finite         any step   the loss or gradient norm is NaN/inf, or weights became
                              non-finite: the run stops, status ``failed``, last.pt untouched
no_decrease        epoch end  train_loss has not gone below its best for
                              ``no_decrease_epochs`` epochs
train_val_gap      epoch end  (val_loss - train_loss) / val_loss > ``train_val_gap``
gpu_memory         epoch end  peak CUDA memory above ``gpu_memory_fraction`` of the device
expect             run end    a final metric outside the profile's ``expect:`` range
=================  =========  ===============================================================

The pure functions below return a ``Finding`` or None and are what the engine calls; each
epoch-level check fires once per run (it says what to look at; repeating it every epoch would
bury the log).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cellbench.config import ChecksConfig


@dataclass
class Finding:
    check: str
    severity: str  # info | warning | error
    message: str


def input_range(batch: torch.Tensor, checks: ChecksConfig) -> Finding | None:
    if not batch.is_floating_point():
        return Finding(
            "input_range",
            "error",
            f"inputs are {batch.dtype}, expected floating point (normalize before the model)",
        )
    values = batch.detach().float()
    if not torch.isfinite(values).all():
        return Finding("input_range", "error", "inputs contain NaN or inf")
    low, high = float(values.min()), float(values.max())
    if low < checks.input_min or high > checks.input_max:
        hint = " (raw 0..255 pixels?)" if high > 2 * checks.input_max else ""
        return Finding(
            "input_range",
            "warning",
            f"inputs span [{low:.3g}, {high:.3g}], outside [{checks.input_min:g}, "
            f"{checks.input_max:g}]{hint}",
        )
    return None


def initial_loss(loss: float, expected: float | None, checks: ChecksConfig) -> Finding | None:
    if expected is None or not math.isfinite(loss):
        return None
    distance = abs(loss - expected) / expected
    if distance > checks.initial_loss_tolerance:
        return Finding(
            "initial_loss",
            "warning",
            f"first loss {loss:.4f} is {distance:.0%} away from ln(C) = {expected:.4f} "
            f"(tolerance {checks.initial_loss_tolerance:.0%}): mis-scaled head or init, wrong "
            "labels or loss?",
        )
    return None


def baselines(values: dict[str, float]) -> Finding | None:
    if not values:
        return None
    parts = []
    if "majority_accuracy" in values:
        parts.append(
            f"majority class '{values.get('majority_class')}' accuracy "
            f"{values['majority_accuracy']:.4f}"
        )
    if "random_accuracy" in values:
        parts.append(f"uniform random accuracy {values['random_accuracy']:.4f}")
    if "uniform_loss" in values:
        parts.append(f"uniform loss ln(C) {values['uniform_loss']:.4f}")
    return Finding("baselines", "info", "to beat: " + ", ".join(parts))


def non_finite(what: str, epoch: int, step: int, last_good: int | None) -> Finding:
    kept = f"checkpoints/last.pt (epoch {last_good}) kept" if last_good else "no checkpoint yet"
    return Finding(
        "non_finite",
        "error",
        f"non-finite {what} by step {step} (epoch {epoch}); run stopped, {kept}. "
        "Lower train.lr, set train.grad_clip, or check the data.",
    )


def no_decrease(train_losses: Sequence[float], checks: ChecksConfig) -> Finding | None:
    n = checks.no_decrease_epochs
    if n <= 0 or len(train_losses) <= n:
        return None
    before = min(train_losses[:-n])
    recent = train_losses[-n:]
    if min(recent) >= before:
        return Finding(
            "no_decrease",
            "warning",
            f"train_loss has not gone below {before:.4f} for {n} epochs "
            "(lr too high or too low? frozen weights?)",
        )
    return None


def train_val_gap(train_loss: float, val_loss: float, checks: ChecksConfig) -> Finding | None:
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)) or val_loss <= 0:
        return None
    gap = (val_loss - train_loss) / val_loss
    if gap > checks.train_val_gap:
        return Finding(
            "train_val_gap",
            "warning",
            f"val_loss {val_loss:.4f} vs train_loss {train_loss:.4f}: gap {gap:.0%} of val_loss "
            f"> {checks.train_val_gap:.0%} (overfitting: more augmentation, regularisation, data)",
        )
    return None


def undefined_metrics(row: dict[str, Any], reason: str) -> list[Finding]:
    """Validation metrics that came out undefined (NaN): written null in JSON and blank in
    history.csv, ignored by best.pt and early stopping; one warning per metric says why."""
    return [
        Finding(
            f"undefined_{name}",
            "warning",
            f"{name} undefined at epoch {row['epoch']}: {reason}; written as null (blank in "
            "history.csv) and ignored by best.pt and early stopping",
        )
        for name, value in row.items()
        if name.startswith("val_") and isinstance(value, float) and not math.isfinite(value)
    ]


def gpu_memory(reading: dict[str, Any], checks: ChecksConfig) -> Finding | None:
    peak, total = reading.get("peak"), reading.get("total")
    if not peak or not total:
        return None
    if peak / total > checks.gpu_memory_fraction:
        return Finding(
            "gpu_memory",
            "warning",
            f"peak GPU memory {peak / 2**30:.1f} GiB is {peak / total:.0%} of "
            f"{total / 2**30:.1f} GiB (> {checks.gpu_memory_fraction:.0%}): lower batch_size",
        )
    return None


def expect(metrics: dict[str, float], ranges: dict[str, list[float]]) -> list[Finding]:
    findings = []
    for name, bounds in ranges.items():
        value = metrics.get(name, metrics.get(f"val_{name}"))
        if value is None or len(bounds) != 2:
            continue
        low, high = bounds
        if not (low <= value <= high):
            findings.append(
                Finding(
                    "expect", "warning", f"{name} = {value:.4g} outside expected [{low}, {high}]"
                )
            )
    return findings


class CheckLog:
    """Emits findings (event + Rich line) and remembers which once-per-run checks fired."""

    def __init__(self, emit: Callable[[Finding], None]):
        self._emit = emit
        self.fired: set[str] = set()
        self.findings: list[Finding] = []

    def report(self, finding: Finding | None, once: bool = False) -> Finding | None:
        if finding is None or (once and finding.check in self.fired):
            return None
        self.fired.add(finding.check)
        self.findings.append(finding)
        self._emit(finding)
        return finding
