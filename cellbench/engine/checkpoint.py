"""Checkpoints: atomic writes, weights_only loads, and the fingerprint of a model's weights.

A checkpoint is one dict (the format DESIGN.md fixes): model, optimizer, scheduler, ema, scaler,
epoch (last completed, 1-based), global_step, rng, best, config, classes, task, version,
init_fingerprint. The engine adds ``history`` (the per-epoch rows up to this epoch: a resume
rebuilds history.csv from the checkpoint, so the two can never disagree) and ``early_stopping``.

The dict is serialised once into memory and then written to ``last.pt`` (and ``best.pt`` when the
monitored metric improved) through temp file + fsync + rename: a crash at any moment leaves the
previous complete file, never a torn one.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellbench.atomic import atomic_write
from cellbench.errors import BadInputError


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over parameter/buffer names, dtypes, shapes and bytes: equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def serialize(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_checkpoint(path: str | Path, blob: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(blob), mode="wb")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a cellbench checkpoint with ``weights_only=True``; bad files exit 3 naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused by weights_only, not a torch file
        raise BadInputError(
            f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise BadInputError(f"{path}: not a cellbench checkpoint (no 'model' state)")
    return payload


def strip_compile_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """State dicts of ``torch.compile``d modules prefix keys with ``_orig_mod.``."""
    prefix = "_orig_mod."
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
