import time

import pytest
import torch
from safetensors.torch import save_file

from cellbench.config import ModelConfig
from cellbench.errors import BadInputError, UsageError
from cellbench.models import create_model, hub


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builtins_and_timm_models_build():
    model = create_model(ModelConfig(name="simple_cnn", args={"hidden": 32}), num_classes=3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert model.weights_report is None
    timm_model = create_model(ModelConfig(name="test_resnet"), num_classes=5, in_chans=1)
    assert timm_model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UsageError, match=r"unknown model 'simple_cn'.*'simple_cnn'"):
        create_model(ModelConfig(name="simple_cn"), 3)
    with pytest.raises(UsageError, match="'resnet18'"):
        create_model(ModelConfig(name="resnet18x"), 3)


def test_bad_args_and_class_count_are_usage_errors():
    with pytest.raises(UsageError, match="model.args"):
        create_model(ModelConfig(name="simple_cnn", args={"widths": [3]}), 3)
    with pytest.raises(UsageError, match="model.num_classes=5 but the data has 3"):
        create_model(ModelConfig(name="simple_cnn", num_classes=5), 3)
    with pytest.raises(UsageError, match="no pretrained weights"):
        create_model(ModelConfig(name="simple_cnn", pretrained=True), 3)


def test_pretrained_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    start = time.monotonic()
    with pytest.raises(BadInputError, match="model resnet10t: pretrained weights not available "
                       "offline.*--weights FILE"):  # fmt: skip
        create_model(ModelConfig(name="resnet10t", pretrained=True), 4)
    assert time.monotonic() - start < 20
    hub.hub_reachable.cache_clear()


@pytest.mark.parametrize(
    "wrap, suffix",
    [
        (lambda sd: sd, ".safetensors"),
        (lambda sd: sd, ".pth"),
        (lambda sd: {"model_state_dict": sd, "epoch": 3}, ".pt"),
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, ".pth"),
        (lambda sd: {"model": sd, "classes": ["a", "b"], "epoch": 1}, ".pt"),  # cellbench ckpt
    ],
)
def test_weights_file_round_trips_exactly(tmp_path, wrap, suffix):
    source = create_model(ModelConfig(name="test_resnet"), num_classes=10)
    path = tmp_path / f"w{suffix}"
    state = wrap({k: v.clone() for k, v in source.state_dict().items()})
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = create_model(ModelConfig(name="test_resnet", weights=str(path)), num_classes=10)
    assert _same_weights(source, loaded)
    report = loaded.weights_report
    assert report.loaded == len(source.state_dict()) and not report.missing
    assert not report.unexpected and not report.dropped_head


def test_timm_pretrained_loader_reads_a_local_file(tmp_path):
    """pretrained + weights goes through timm's own loader (pretrained_cfg_overlay file=...)."""
    source = create_model(ModelConfig(name="test_vit"), num_classes=1000)
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_model(
        ModelConfig(name="test_vit", pretrained=True, weights=str(path)), num_classes=1000
    )
    assert _same_weights(source, loaded) and loaded.weights_report.source == "timm"
    # another class count: timm re-initialises the classifier, the backbone is kept
    tuned = create_model(
        ModelConfig(name="test_vit", pretrained=True, weights=str(path)), num_classes=3
    )
    assert torch.equal(tuned.state_dict()["pos_embed"], source.state_dict()["pos_embed"])
    assert tuned.get_classifier().out_features == 3


def test_mismatched_classifier_is_dropped_and_reported(tmp_path):
    source = create_model(ModelConfig(name="simple_cnn"), num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(source.state_dict(), path)
    tuned = create_model(ModelConfig(name="simple_cnn", weights=str(path)), num_classes=4)
    report = tuned.weights_report
    assert sorted(report.dropped_head) == ["fc.bias", "fc.weight"]
    assert torch.equal(tuned.fc1.weight, source.fc1.weight)
    assert any("dropped" in line for line in report.messages())


def test_incompatible_or_unsafe_files_are_bad_input(tmp_path):
    other = create_model(ModelConfig(name="simple_cnn", args={"hidden": 64}), num_classes=4)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(BadInputError, match="'fc1.weight' has shape"):
        create_model(ModelConfig(name="simple_cnn", weights=str(path)), num_classes=4)

    pickled = tmp_path / "model.pth"
    torch.save(other, pickled)  # a whole pickled module: refused, weights_only=True
    with pytest.raises(BadInputError, match="weights_only=True"):
        create_model(ModelConfig(name="simple_cnn", weights=str(pickled)), num_classes=4)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(BadInputError, match="none of its 1 tensors match"):
        create_model(ModelConfig(name="simple_cnn", weights=str(foreign)), num_classes=4)

    with pytest.raises(BadInputError, match="weights file not found"):
        create_model(ModelConfig(name="simple_cnn", weights=str(tmp_path / "nope.pt")), 4)

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(BadInputError, match="not a readable safetensors"):
        create_model(ModelConfig(name="simple_cnn", weights=str(tmp_path / "junk.safetensors")), 4)
