"""Checkpoints: atomic writes, weights_only loads, and the fingerprint of a model's weights.

A checkpoint is one dict (the format DESIGN.md fixes): model, optimizer, scheduler, ema, scaler,
epoch (last completed, 1-based), global_step, rng, best, config, classes, task, version,
init_fingerprint. The engine adds ``history`` (the per-epoch rows up to this epoch: a resume
rebuilds history.csv from the checkpoint, so the two can never disagree) and ``early_stopping``.

The dict is serialised once into memory; those bytes go to ``best.pt`` (when the monitored metric
improved) and then to ``last.pt``, each through temp file + fsync + rename: a crash at any moment
leaves the previous complete file, never a torn one. ``last.pt`` is written last because it is the
commit point: a resume starts from it, and ``repair_best`` makes ``best.pt`` agree with it.
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
from cellbench.models.weights import torch_load_error


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over parameter/buffer names, dtypes, shapes and bytes: equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def serialize(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_checkpoint(path: str | Path, blob: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(blob), mode="wb")


def write_epoch_checkpoints(
    blob: bytes, last: Path, best: Path | None = None, written: list[Path] | None = None
) -> None:
    """``best.pt`` first (when given), then ``last.pt``, the commit point.

    A kill between the two leaves ``last.pt`` one epoch behind a ``best.pt`` that the resumed run
    writes again, identically: never a ``last.pt`` whose best epoch is missing from ``best.pt``.
    Each file completed is appended to ``written``: after a failed write (a full disk) the
    caller's bookkeeping follows what the files hold.
    """
    for path in (best, last):
        if path is not None:
            write_checkpoint(path, blob)
            if written is not None:
                written.append(path)


def checkpoint_epoch(path: Path) -> int | None:
    """The ``epoch`` of a checkpoint file, or None when it is missing or unreadable.

    Memory-mapped: only the small fields are read, not the weights.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"])
    except Exception:  # missing, torn by a crash, foreign: the caller rewrites it
        return None


def repair_best(state: dict[str, Any], last: Path, best: Path) -> bool:
    """Make ``best.pt`` hold the epoch ``last.pt`` says is best, when that epoch is ``last.pt``'s
    own and ``best.pt`` disagrees (a run killed between the two writes by an older cellbench, or
    a ``best.pt`` lost since). Returns True when ``best.pt`` was rewritten."""
    best_epoch = (state.get("best") or {}).get("epoch")
    if best_epoch is None or best_epoch != state.get("epoch"):
        return False
    if checkpoint_epoch(best) == best_epoch:
        return False
    write_checkpoint(best, last.read_bytes())
    return True


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a cellbench checkpoint with ``weights_only=True``; bad files exit 3 naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused by weights_only, not a torch file
        raise BadInputError(f"{path}: cannot load checkpoint: {torch_load_error(exc)}") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise BadInputError(f"{path}: not a cellbench checkpoint (no 'model' state)")
    return payload


CHECKPOINTS = ("best", "last")


def checkpoint_file(run, checkpoint: str) -> Path:
    """The run's (``RunPaths``) ``best.pt`` or ``last.pt``; refused when it is missing."""
    from cellbench.errors import UsageError

    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"--checkpoint {checkpoint}: expected one of {', '.join(CHECKPOINTS)}")
    path = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
    if not path.is_file():
        raise BadInputError(
            f"{path}: no {checkpoint} checkpoint in run {run.root.name} "
            "(has it trained at least one epoch?)"
        )
    return path


def read_checkpoint(path) -> dict[str, Any]:
    """A cellbench checkpoint, loaded with ``weights_only=True`` (no code runs from the file)."""
    state = load_checkpoint(path)
    missing = [k for k in ("config", "classes") if k not in state]
    if missing:
        raise BadInputError(f"{path}: not a cellbench checkpoint (missing {', '.join(missing)})")
    return state
