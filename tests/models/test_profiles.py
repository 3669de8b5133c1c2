import dataclasses

import pytest
import torch

from cellbench.config import list_profiles, load_config
from cellbench.models import count_parameters, create_model

OURS = ("demo", "tiny_imagenet_inception", "flowers_convnextv2")


def test_shipped_classification_profiles_exist():
    assert set(OURS) <= set(list_profiles())


@pytest.mark.parametrize("profile", OURS)
def test_profile_loads_and_builds_its_model_on_cpu(profile):
    config = load_config(profile=profile)
    assert config.task == "classify"
    # build only (pretrained weights need the hub; the test stays offline)
    model_cfg = dataclasses.replace(config.model, pretrained=False)
    num_classes = config.model.num_classes or len(config.data.classes or []) or 4
    model = create_model(model_cfg, num_classes=num_classes, in_chans=config.data.in_chans)
    assert model.get_classifier().out_features == num_classes
    if profile != "flowers_convnextv2":  # convnextv2_tiny's forward is too heavy for the suite
        size = config.data.image_size
        assert model(torch.randn(2, 3, size, size)).shape == (2, num_classes)


def test_tiny_imagenet_profile_is_the_seed_study():
    c = load_config(profile="tiny_imagenet_inception")
    assert (c.model.name, c.model.args) == (
        "inception_multibranch", {"num_modules": 6, "branch_channels": [64, 64, 64]},
    )  # fmt: skip
    assert (c.train.batch_size, c.train.epochs, c.train.lr, c.train.weight_decay) == (
        32, 40, 0.002, 0.00001,
    )  # fmt: skip
    assert (c.train.optimizer, c.data.image_size, c.model.num_classes) == ("adam", 64, 200)
    model = create_model(c.model, num_classes=200)
    assert count_parameters(model) == 763_528


def test_flowers_profile_is_the_seed_recipe():
    c = load_config(profile="flowers_convnextv2")
    t = c.train
    assert c.model.name == "convnextv2_tiny" and c.data.image_size == 224
    assert c.data.classes == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert (t.optimizer, t.weight_decay, t.warmup_epochs) == ("adamw", 0.02, 3)
    assert t.scheduler == "cosine"
    assert (t.label_smoothing, t.mixup, t.ema, t.grad_clip, t.freeze_backbone_epochs) == (
        0.05, 0.2, True, 1.0, 3,
    )  # fmt: skip
    es = t.early_stopping
    assert (es.patience, es.min_delta, es.monitor, es.mode) == (10, 0.001, "val_accuracy", "max")
