"""Fixtures of the feature tests (tests/features, tests/cli): a small generated nuclei store
and a tiny random timm ViT whose weights live in a file. Import them into a test module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cellbench.data.prepare import prepare
from cellbench.data.synth import synth

TINY_VIT = {
    "model": "vit_tiny_patch16_224",
    "kwargs": {
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 3,
        "num_heads": 2,
        "reg_tokens": 2,  # registers must be dropped from the tokens
        "num_classes": 0,
    },
    "preprocessing": {"mean": [0.6, 0.5, 0.6], "std": [0.2, 0.2, 0.2], "input_size": 32},
    "blocks": [1, 3],
    "expect": {"cls_std": [0.5, 1.5]},
}


@pytest.fixture(scope="session")
def fx_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "pannuke"
    synth(raw, folds=2, tiles=10, seed=3, size=64)
    return raw


@pytest.fixture(scope="session")
def fx_store_master(fx_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "store"
    prepare(fx_raw, out, folds=(1, 2))
    return out


@pytest.fixture
def fx_store(fx_store_master, tmp_path) -> Path:
    return Path(shutil.copytree(fx_store_master, tmp_path / "store"))


@pytest.fixture
def tiny_vit(tmp_path) -> Path:
    path = tmp_path / "tiny-vit.yaml"
    path.write_text(yaml.safe_dump(TINY_VIT))
    return path


@pytest.fixture
def tiny_vit_weights(tiny_vit, tmp_path) -> Path:
    """Weights of the tiny ViT from another seed than the profile's, saved as safetensors."""
    import torch
    from safetensors.torch import save_file

    from cellbench.models.backbones import create_vit, load_backbone_profile

    profile = load_backbone_profile(str(tiny_vit))
    torch.manual_seed(1234)
    model = create_vit(profile)
    for p in model.parameters():  # not the profile's seed-0 init: the file must really be used
        p.data.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "tiny-vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def organ_features(tmp_path_factory) -> Path:
    """vit-demo features of a generated store big enough to learn organ families from:
    two folds of 80 tiles (96 px), extracted once for the session. Read-only for the tests."""
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    base = tmp_path_factory.mktemp("organ")
    synth(base / "raw", folds=2, tiles=80, seed=11, size=96)
    prepare(base / "raw", base / "store", folds=(1, 2))
    root, _ = extract_features(base / "store", build_backbone("vit-demo", device="cpu"))
    return root
