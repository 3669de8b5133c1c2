"""What ``build_components`` decides from the config: loaders and deterministic mode."""

from __future__ import annotations

import torch

from cellbench.engine.components import build_components, resolve_deterministic
from cellbench.tasks import get_task


def test_deterministic_auto_is_on_for_cpu_and_off_for_cuda():
    assert resolve_deterministic("auto", torch.device("cpu")) is True
    assert resolve_deterministic("auto", torch.device("cuda")) is False
    assert resolve_deterministic(True, torch.device("cuda")) is True
    assert resolve_deterministic(False, torch.device("cpu")) is False


def test_validation_workers_persist_training_workers_do_not(tiny_config):
    c = build_components(tiny_config("data.num_workers=1"), get_task("classify"))
    # validation has no randomness; training workers are re-seeded from each epoch's generator
    assert c.val_loader.persistent_workers is True
    assert c.train_loader.persistent_workers is False
    assert torch.are_deterministic_algorithms_enabled()  # auto on the CPU
