"""Seeding and RNG state: the same config gives the same curve, and a resume continues it exactly.

Three sources of randomness feed a training: Python's ``random``, NumPy's global generator
(``timm.data.Mixup`` draws from it) and torch's CPU/CUDA generators (init, dropout, augmentation).
``seed_everything`` seeds all of them; ``capture_rng``/``restore_rng`` carry their exact states
through a checkpoint. The states are stored as tensors and plain lists so the checkpoint stays
loadable with ``torch.load(weights_only=True)``.

Data order does not depend on these states: each epoch's shuffle uses a generator seeded from
(seed, epoch) (``epoch_seed``), so epoch k shuffles the same way whether the run was resumed
or not, and DataLoader workers derive their seeds from that generator (``seed_worker``).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every global RNG and set torch's deterministic mode either way (it is process-wide,
    so a previous training in the same process must not leave it on or off)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this workspace setting to be deterministic; it must be set before the
        # first cuBLAS call, which is why it is set here rather than when CUDA is first used.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # cuDNN autotuning picks the fastest kernels for the (fixed) input shapes, not reproducibly
    torch.backends.cudnn.benchmark = not deterministic


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s (0-based) shuffling generator: independent of the past."""
    return seed * 100_003 + epoch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy/random from the worker's torch seed.

    torch seeds each worker from the loader's generator; numpy and ``random`` are not, so without
    this two workers (or two epochs) would draw the same numpy augmentations.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def capture_rng() -> dict[str, Any]:
    """Every global RNG state, in a weights_only-loadable form."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
