"""Machine profiles: the shipped ones load, auto picks by device, the effective batch is kept."""

from __future__ import annotations

import pytest

from cellbench import machines
from cellbench.engine.session import TrainRequest, resolve_config
from cellbench.errors import UsageError


def test_every_shipped_machine_profile_loads_and_its_config_applies():
    from cellbench.config import load_config

    names = machines.machine_names()
    assert names == ["a100-80gb", "cpu", "h100-80gb", "h200", "mig-12gb"]
    for name in names:
        m = machines.load_machine(name)
        assert m.batch_size >= 1 and m.features_batch >= 1 and m.eval_batch >= 1
        config = load_config(machine=m.config_layer())
        assert config.train.amp in ("off", "bf16")


@pytest.mark.parametrize(
    ("name", "gib", "expected"),
    [
        ("NVIDIA H100 80GB HBM3 MIG 1g.12gb", 10.9, "mig-12gb"),  # a slice, not the H100
        ("NVIDIA H100 80GB HBM3", 79.1, "h100-80gb"),
        ("NVIDIA H200", 139.8, "h200"),
        ("NVIDIA A100-SXM4-80GB", 79.2, "a100-80gb"),
        ("NVIDIA RTX A6000", 47.5, "mig-12gb"),  # by memory: the largest that fits
        ("Some GPU", 95.0, "a100-80gb"),  # 80 GB profiles tie: the first by name
    ],
)
def test_auto_picks_by_name_then_memory(name, gib, expected):
    assert machines.pick(name, gib) == expected


def test_fit_batch_keeps_the_effective_batch():
    assert machines.fit_batch(64, 1, 8) == (8, 8)
    assert machines.fit_batch(64, 2, 8) == (8, 4)
    assert machines.fit_batch(48, 1, 32) == (24, 2)  # the largest divisor under the cap
    assert machines.fit_batch(32, 3, 8) is None


def test_a_machine_layers_under_the_task_profile_and_keeps_its_effective_batch(tmp_path):
    profile = tmp_path / "study.yaml"
    profile.write_text("train:\n  batch_size: 64\n  amp: 'off'\n")
    request = TrainRequest(profile=str(profile), machine="mig-12gb")
    config = resolve_config(request, None)
    t = config.train
    assert (t.batch_size, t.grad_accum_steps) == (8, 8)  # 64 kept
    assert t.amp == "off"  # the task profile wins over the machine
    assert t.channels_last is True and t.memory_guard == 0.85  # what the profile left open
    assert t.machine == "mig-12gb" and "effective batch 64" in request.notes[0]
    # a batch given by hand is kept
    request = TrainRequest(
        profile=str(profile), machine="mig-12gb", overrides=["train.batch_size=16"]
    )
    assert resolve_config(request, None).train.batch_size == 16


def test_an_unknown_machine_is_refused_with_a_suggestion():
    with pytest.raises(UsageError, match="did you mean 'h200'"):
        machines.load_machine("h20")
    assert machines.machine_batch("cpu", None, "features", 8) == 4
    assert machines.machine_batch("cpu", 3, "features", 8) == 3
    assert machines.machine_batch(None, None, "eval", 32) == 32
