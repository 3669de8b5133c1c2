import torch

from cellbench.config import ModelConfig
from cellbench.models import (
    backbone_parameters,
    count_parameters,
    create_model,
    head_parameters,
    set_backbone_trainable,
)


def test_head_and_backbone_partition_the_parameters():
    for name in ("simple_cnn", "inception_multibranch", "test_convnext"):
        model = create_model(ModelConfig(name=name), num_classes=3)
        head, backbone = head_parameters(model), backbone_parameters(model)
        assert {id(p) for p in head} == {id(p) for p in model.get_classifier().parameters()}
        assert len(head) + len(backbone) == len(list(model.parameters()))
        assert sum(p.numel() for p in head) + sum(p.numel() for p in backbone) == (
            count_parameters(model)
        )


def test_frozen_backbone_trains_only_the_head():
    model = create_model(ModelConfig(name="simple_cnn"), num_classes=3)
    frozen = set_backbone_trainable(model, False)  # the count the engine logs
    assert frozen == count_parameters(model) - (128 * 3 + 3)
    assert count_parameters(model, trainable_only=True) == 128 * 3 + 3
    before = [p.clone() for p in backbone_parameters(model)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, backbone_parameters(model), strict=True))
    assert set_backbone_trainable(model, True) == frozen
    assert count_parameters(model, trainable_only=True) == count_parameters(model)
