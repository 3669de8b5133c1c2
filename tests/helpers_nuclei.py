"""Fixtures of the nuclei-task tests: a generated 64-px store (2 folds x 16 tiles, 3-4 digestive
tiles per fold) and its tokens from a tiny random ViT (patch 8 on a 32-px input: a 4x4 grid,
blocks 1 and 3). Import the fixtures into a test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

NUCLEI_VIT = {
    "model": "vit_tiny_patch16_224",
    "kwargs": {
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 16,
        "depth": 3,
        "num_heads": 2,
        "reg_tokens": 1,
        "num_classes": 0,
    },
    "preprocessing": {"mean": [0.6, 0.5, 0.6], "std": [0.2, 0.2, 0.2], "input_size": 32},
    "blocks": [1, 3],
    "expect": {"cls_std": [0.1, 10.0]},
}
# a decoder for the tiny tokens: 2 blocks -> 2 stages of 8 channels; 2 epochs of 1 batch
TINY_NUCLEI = [
    "nuclei.widths=[8, 8]",
    "nuclei.stem=[8, 8]",
    "train.batch_size=4",
    "train.epochs=2",
    "train.log_every=1",
    "train.lr=0.003",
    "eval.pq_every=2",
]


def make_nuclei_features(root: Path, tiles: int = 16) -> Path:
    """synth -> prepare -> features extract under ``root``; returns STORE/features/TAG."""
    from cellbench.data.prepare import prepare
    from cellbench.data.synth import synth
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    synth(root / "raw", folds=2, tiles=tiles, seed=1, size=64)
    prepare(root / "raw", root / "store", folds=(1, 2))
    profile = root / "tiny-vit.yaml"
    profile.write_text(yaml.safe_dump(NUCLEI_VIT))
    backbone = build_backbone(str(profile), None, device="cpu")
    features, _ = extract_features(root / "store", backbone, tag="tiny", batch_size=8)
    return features


@pytest.fixture(scope="session")
def nuclei_features(tmp_path_factory) -> Path:
    return make_nuclei_features(tmp_path_factory.mktemp("nuclei"))


def nuclei_overrides(features: Path, *extra: str) -> list[str]:
    """--set strings of a tiny digestive-decoder training on ``features``."""
    return [
        "task=nuclei",
        "data.family=digestive",
        f"data.features={features}",
        *TINY_NUCLEI,
        *extra,
    ]
