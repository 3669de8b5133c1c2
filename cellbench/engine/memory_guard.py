"""The memory guard: does this batch fit the GPU, and if not, what batch/accumulation would.

After the first optimizer steps (``GUARD_STEPS``: the allocator has seen forward, backward and an
optimizer state by then) the peak CUDA memory is compared with the device's total; past
``train.memory_guard`` (a machine profile sets it) a ``warning`` event and a Rich line suggest a
smaller batch with more accumulation, keeping the effective batch (batch x accumulation x
processes). A CUDA out-of-memory error ends the run ``failed`` with the same kind of suggestion
(``oom_reason``), without a traceback, the checkpoints untouched.

Activation memory grows about linearly with the batch, so the suggestion halves the batch (and
doubles the accumulation) until the scaled peak fits; weights and optimizer state do not shrink,
which is why the suggestion is a start, said as such.
"""

from __future__ import annotations

import torch

from cellbench.config import TrainConfig
from cellbench.engine.checks import Finding

GUARD_STEPS = 3


def suggest(batch: int, accum: int, ratio: float) -> tuple[int, int]:
    """(batch, accumulation) with the same product, the batch halved until ``ratio`` (peak over
    the allowed memory) scaled by it is at most 1; at least a batch of 1."""
    while ratio > 1.0 and batch > 1:
        batch = max(1, batch // 2)
        accum *= 2
        ratio /= 2
    return batch, accum


def _fit_text(train: TrainConfig, world: int, batch: int, accum: int) -> str:
    effective = train.batch_size * train.grad_accum_steps * world
    return (
        f"try --set train.batch_size={batch} --set train.grad_accum_steps={accum} "
        f"(effective batch {effective} kept)"
    )


def check(device: torch.device, train: TrainConfig, world: int, fraction: float) -> Finding | None:
    """A ``memory_guard`` warning when the peak so far passes ``fraction`` of the device."""
    if device.type != "cuda" or fraction <= 0:
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    peak = torch.cuda.max_memory_allocated(device)
    share = peak / total
    if share <= fraction:
        return None
    batch, accum = suggest(train.batch_size, train.grad_accum_steps, share / fraction)
    return Finding(
        "memory_guard",
        "warning",
        f"the first {GUARD_STEPS} steps peaked at {peak / 2**30:.1f} GiB, {share:.0%} of the "
        f"{total / 2**30:.1f} GiB device (guard {fraction:.0%}): "
        + _fit_text(train, world, batch, accum),
    )


def oom_reason(train: TrainConfig, world: int) -> str:
    """The ``run_end`` reason of a CUDA out-of-memory error."""
    batch, accum = suggest(train.batch_size, train.grad_accum_steps, 2.0)
    if train.batch_size == 1:
        return "CUDA out of memory at batch 1: use a smaller model, amp bf16 or a larger GPU"
    return f"CUDA out of memory at batch {train.batch_size}: " + _fit_text(
        train, world, batch, accum
    )
