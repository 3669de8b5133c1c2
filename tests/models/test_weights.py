"""The one lenient loader: wrapper prefixes, a new head allowed, anything else refused."""

from __future__ import annotations

import pytest
import torch

from cellbench.config import ModelConfig
from cellbench.errors import BadInputError
from cellbench.models import create_model, load_state, strip_prefixes


def test_only_prefixes_shared_by_every_key_are_wrappers():
    t = torch.zeros(1)
    wrapped = {"module._orig_mod.a.weight": t, "module._orig_mod.b": t}
    assert set(strip_prefixes(wrapped)) == {"a.weight", "b"}
    # a submodule called "module" is a name, not a DDP wrapper
    named = {"module.weight": t, "head.weight": t}
    assert strip_prefixes(named) == named


def test_load_state_reports_a_new_head_and_refuses_other_mismatches():
    ten = create_model(ModelConfig(name="simple_cnn"), num_classes=10)
    four = create_model(ModelConfig(name="simple_cnn"), num_classes=4)
    report = load_state(four, {f"module.{k}": v for k, v in ten.state_dict().items()}, "src")
    assert sorted(report.dropped_head) == ["fc.bias", "fc.weight"]
    assert torch.equal(four.fc1.weight, ten.fc1.weight)
    assert any("src: classifier" in line for line in report.messages())

    wide = create_model(ModelConfig(name="simple_cnn", args={"hidden": 64}), num_classes=4)
    with pytest.raises(BadInputError, match="src: 'fc1.weight' has shape"):
        load_state(wide, ten.state_dict(), "src")
