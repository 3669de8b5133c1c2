"""Device, mixed precision and memory readings.

``train.amp``: ``auto`` is bf16 autocast on CUDA (no scaler needed: bf16 has fp32's range) and
off on CPU; ``bf16`` forces bf16 autocast (CPU too); ``fp16`` uses fp16 autocast with a
``torch.amp.GradScaler`` (the scaler skips steps whose gradients overflowed); ``off`` is fp32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from cellbench.errors import UsageError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; an unavailable CUDA is exit 2."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(
            f"train.device={name}: not a device (use auto, cpu, cuda, cuda:N)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"train.device={name}: CUDA is not available on this machine")
    return device


@dataclass
class Precision:
    """How forward passes run: autocast dtype (None: fp32) and whether a grad scaler is used."""

    mode: str  # off | bf16 | fp16
    dtype: torch.dtype | None
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        if self.mode != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    dtypes = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise UsageError(f"train.amp={amp}: expected auto, off, bf16 or fp16")
    return Precision(mode=amp, dtype=dtypes[amp], device_type=device.type)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def process_rss() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil missing or a sandbox without /proc: report nothing rather than fail
        return 0


def memory_reading(device: torch.device) -> dict[str, Any]:
    """The ``memory`` event fields: CUDA allocator numbers on CUDA (else None), process RSS."""
    reading: dict[str, Any] = {
        "device": str(device),
        "allocated": None,
        "reserved": None,
        "peak": None,
        "total": None,
        "rss": process_rss(),
    }
    if device.type == "cuda":
        reading.update(
            allocated=int(torch.cuda.memory_allocated(device)),
            reserved=int(torch.cuda.memory_reserved(device)),
            peak=int(torch.cuda.max_memory_allocated(device)),
            total=int(torch.cuda.get_device_properties(device).total_memory),
        )
    return reading
