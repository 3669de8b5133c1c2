"""Shared fixtures of the engine tests: a tiny generated shapes dataset and a tiny CNN config."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellbench.config import Config, load_config
from cellbench.data.classify.shapes import write_shapes_dataset

# 4 classes x 16 images of 32x32 pixels; a 2-conv CNN with 8 and 16 channels: about 1 s per run
TINY = [
    "data.image_size=32",
    "data.max_samples=null",
    "train.batch_size=16",
    "train.epochs=3",
    "train.log_every=2",
    "model.name=simple_cnn",
    "model.args={channels: [8, 16], hidden: 32}",
]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    write_shapes_dataset(root, n_per_class=16, image_size=32, seed=0)
    return root


@pytest.fixture
def tiny_overrides(shapes_dir):
    """``tiny_overrides(*extra)``: --set strings of a tiny training on the shapes dataset."""

    def make(*extra: str) -> list[str]:
        return [f"data.path={shapes_dir}", *TINY, *extra]

    return make


@pytest.fixture
def tiny_config(tiny_overrides):
    """``tiny_config(*extra)``: the resolved Config of a tiny training."""

    def make(*extra: str) -> Config:
        return load_config(overrides=tiny_overrides(*extra))

    return make
