"""Backbone profiles, building, weights and the one extraction path."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from cellbench.errors import BadInputError, UsageError
from cellbench.models.backbones import (
    build_backbone,
    count_parameters_meta,
    create_vit,
    extract,
    load_backbone_profile,
    preprocess,
)
from tests.helpers_features import TINY_VIT

TINY = TINY_VIT  # the tiny timm ViT (registers included) the feature tests share


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_h_optimus_0_profile_builds_its_architecture_without_allocating():
    profile = load_backbone_profile("h-optimus-0")
    assert profile.blocks == (10, 20, 30, 40)
    assert profile.input_size == 252 and profile.cls_std == (0.70, 0.90)
    assert profile.mean == (0.707223, 0.578729, 0.703617)
    model = create_vit(profile, device="meta")
    assert len(model.blocks) == 40 and model.num_features == 1536
    assert model.num_prefix_tokens == 5  # CLS + 4 registers
    assert model.patch_embed.grid_size == (18, 18)
    assert type(model.blocks[0].mlp).__name__ == "GluMlp"  # SwiGLUPacked
    assert isinstance(model.blocks[0].mlp.act, torch.nn.SiLU)
    assert 1.1e9 < count_parameters_meta(profile) < 1.2e9  # H-optimus-0: 1.1B parameters


def test_vit_demo_is_small_and_its_random_weights_are_reproducible():
    a = build_backbone("vit-demo", device="cpu")
    b = build_backbone("vit-demo", device="cpu")
    assert a.weights["sha256"] == b.weights["sha256"] and a.weights["source"] == "random"
    assert sum(p.numel() for p in a.model.parameters()) < 2_000_000
    assert len(a.model.blocks) <= 8


def test_extract_gives_forward_features_cls_and_block_tokens_without_prefix(tiny):
    backbone = build_backbone(str(tiny), device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    cls, tokens = backbone.extract(images)
    assert cls.shape == (3, 32) and tokens.shape == (3, 2, 4, 4, 32)
    x = preprocess(images, backbone.profile)
    assert x.shape == (3, 3, 32, 32)  # resized 48 -> 32
    model = backbone.model
    torch.testing.assert_close(cls, model.forward_features(x)[:, 0])
    # timm's own intermediates (raw block outputs, prefix tokens dropped) agree with the hooks
    inter = model.forward_intermediates(
        x, indices=[0, 2], norm=False, intermediates_only=True, output_fmt="NCHW"
    )
    torch.testing.assert_close(tokens[:, 0], inter[0].permute(0, 2, 3, 1))
    torch.testing.assert_close(tokens[:, 1], inter[1].permute(0, 2, 3, 1))
    direct_cls, _ = extract(model, x, (3,))
    torch.testing.assert_close(direct_cls, cls)


def test_preprocessing_is_uint8_scaled_then_normalized(tiny):
    profile = load_backbone_profile(str(tiny))
    images = np.full((1, 32, 32, 3), 153, dtype=np.uint8)  # 0.6 in [0, 1]
    x = preprocess(images, profile)
    assert torch.allclose(x[0, 0], torch.zeros(32, 32), atol=1e-5)  # (0.6 - 0.6) / 0.2
    assert torch.allclose(x[0, 1], torch.full((32, 32), 0.5), atol=1e-5)  # (0.6 - 0.5) / 0.2
    with pytest.raises(BadInputError, match="uint8"):
        preprocess(images.astype(np.float32), profile)


def test_weights_file_is_loaded_and_identified_by_sha256(tiny, tmp_path):
    from safetensors.torch import save_file

    profile = load_backbone_profile(str(tiny))
    model = create_vit(profile)
    for p in model.parameters():
        p.data.add_(1.0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = build_backbone(profile, path, device="cpu")
    assert loaded.weights["source"] == "file" and len(loaded.weights["sha256"]) == 64
    torch.testing.assert_close(loaded.model.pos_embed, model.pos_embed)


def test_bad_weights_and_profiles_are_refused_with_one_line(tiny, tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(BadInputError, match="other.pth"):
        build_backbone(str(tiny), other, device="cpu")
    with pytest.raises(BadInputError, match="not found"):
        build_backbone(str(tiny), tmp_path / "missing.pth", device="cpu")
    with pytest.raises(UsageError, match="unknown backbone"):
        load_backbone_profile("h-optimus-O")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: vit_tiny_patch16_224\nblok: [1]\n")
    with pytest.raises(BadInputError, match="did you mean 'blocks'"):
        load_backbone_profile(str(bad))
    with pytest.raises(UsageError, match="has 3 blocks"):
        build_backbone(str(tiny), blocks=(4,), device="cpu")


def test_gated_hub_model_offline_gives_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from cellbench.models import hub

    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(BadInputError, match="--weights FILE"):
            build_backbone("vit-demo", pretrained=True, device="cpu")
    finally:
        hub.hub_reachable.cache_clear()


class _RandomFills(TorchDispatchMode):
    """Counts the random fills (``normal_``, ``uniform_``...: what an init does) of real tensors;
    the meta device's are free and not counted."""

    RANDOM = {"normal_", "uniform_", "bernoulli_", "random_", "exponential_", "erfinv_"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        target = args[0] if args else None
        if (
            func.overloadpacket.__name__ in self.RANDOM
            and getattr(target, "is_meta", True) is False
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _vit_g_block_profile():
    """H-optimus-0's profile (ViT-g/14: width 1536, SwiGLU, 4 registers) cut to one block on a
    28-px input: the real layer sizes, a 110 MB file instead of 4.5 GB."""
    base = load_backbone_profile("h-optimus-0")
    kwargs = {**base.kwargs, "depth": 1, "img_size": 28}
    return dataclasses.replace(base, kwargs=kwargs, input_size=28, blocks=(1,))


def test_a_weights_file_loads_on_the_meta_device_and_is_hashed_once(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from cellbench.data import npyio

    monkeypatch.setenv("CELLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    profile = _vit_g_block_profile()
    source = create_vit(profile)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    hashed = []
    real = npyio.sha256_file
    monkeypatch.setattr(npyio, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))

    with _RandomFills() as fills:
        first = build_backbone(profile, path, device="cpu")
    assert fills.count == 0  # no random init of the parameters the file replaces
    assert not any(t.is_meta for t in first.model.state_dict().values())
    for key, value in source.state_dict().items():
        assert torch.equal(first.model.state_dict()[key], value), key
    second = build_backbone(profile, path, device="cpu")
    assert len(hashed) == 1  # two loads, one hash
    assert first.weights["sha256"] == second.weights["sha256"] == real(path)
    images = np.zeros((1, 28, 28, 3), dtype=np.uint8)
    assert torch.equal(
        first.extract(images)[0], extract(source, preprocess(images, profile), (1,))[0]
    )

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    build_backbone(profile, path, device="cpu")
    assert len(hashed) == 2  # a file touched since is hashed again


def test_the_digest_cache_survives_a_damaged_or_read_only_cache(tmp_path, monkeypatch):
    from cellbench.data.npyio import sha256_file
    from cellbench.digest_cache import CACHE_FILE, file_sha256

    cache = tmp_path / "cache"
    monkeypatch.setenv("CELLBENCH_CACHE_DIR", str(cache))
    data = tmp_path / "w.bin"
    data.write_bytes(b"weights")
    cache.mkdir()
    (cache / CACHE_FILE).write_text("{not json")
    assert file_sha256(data) == sha256_file(data)
    assert str(data.resolve()) in json.loads((cache / CACHE_FILE).read_text())
    monkeypatch.setenv("CELLBENCH_CACHE_DIR", str(data / "not-a-folder"))  # cannot be written
    assert file_sha256(data) == sha256_file(data)
