import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay

import cellbench.models  # noqa: F401  (registers the built-ins with timm)
from cellbench.models import InceptionMultibranch, SimpleCNN


@pytest.mark.parametrize("num_modules, expected", [(4, 492_424), (6, 763_528)])
def test_inception_matches_the_seed_parameter_counts(num_modules, expected):
    # seeds/002 reports these totals for 200 classes and branch_channels (64, 64, 64)
    model = timm.create_model("inception_multibranch", num_classes=200, num_modules=num_modules)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_inception_downsamples_after_every_second_module_but_the_last():
    model = InceptionMultibranch(num_classes=5, num_modules=6, branch_channels=(48, 72, 72))
    with torch.no_grad():
        features = model.eval().forward_features(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 192, 16, 16)  # 64 -> 32 -> 16, as in the seed
    m4 = InceptionMultibranch(num_classes=5, num_modules=4)
    with torch.no_grad():
        assert m4.eval().forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 32


def test_simple_cnn_takes_any_input_size():
    model = timm.create_model("simple_cnn", num_classes=7)
    for size in (16, 37, 96):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    wide = SimpleCNN(num_classes=3, in_chans=1, channels=(8, 16, 32), hidden=20, dropout=0.5)
    assert wide(torch.randn(2, 1, 40, 24)).shape == (2, 3)


@pytest.mark.parametrize("name", ["simple_cnn", "inception_multibranch"])
def test_timm_model_api(name):
    args = {"num_modules": 2} if name == "inception_multibranch" else {}
    model = timm.create_model(name, num_classes=4, **args)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model.forward_head(model.forward_features(x)), model(x))
    assert model.get_classifier().out_features == 4
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape[1] == (
        model.get_classifier().in_features
    )
    model.reset_classifier(9)
    assert model(x).shape == (2, 9)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)  # no classifier: pre-logits
    # the group matcher puts the classifier in the last layer-decay group
    groups = param_groups_layer_decay(model, weight_decay=0.01, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert len(scales) >= 2 and max(scales) == 1.0
    assert model.pretrained_cfg["architecture"] == name


def test_drop_rate_is_the_classifier_dropout():
    model = timm.create_model("simple_cnn", num_classes=2, drop_rate=0.3)
    assert model.head_drop.p == 0.3
