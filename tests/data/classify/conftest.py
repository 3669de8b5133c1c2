"""Small generated classification datasets shared by the classify tests (built once per session)."""

from __future__ import annotations

import pytest

from cellbench.config import DataConfig, load_config
from cellbench.data.classify import write_shapes_dataset


@pytest.fixture(scope="session")
def shapes_flat(tmp_path_factory):
    """root/<class>/*.png: 3 classes x 12 images, 16 px."""
    root = tmp_path_factory.mktemp("shapes") / "flat"
    write_shapes_dataset(root, classes=("circle", "square", "triangle"), n_per_class=12,
                         image_size=16, seed=1)  # fmt: skip
    return root


@pytest.fixture(scope="session")
def shapes_tree(tmp_path_factory):
    """root/{train,val,test}/<class>/*.png."""
    root = tmp_path_factory.mktemp("shapes") / "tree"
    write_shapes_dataset(root, classes=("circle", "square", "triangle"), n_per_class=20,
                         image_size=16, seed=2, layout="split")  # fmt: skip
    return root


def data_config(path, **overrides) -> DataConfig:
    sets = [f"data.path={path}"] + [f"data.{k}={v}" for k, v in overrides.items()]
    return load_config(overrides=sets).data


def config(path, **overrides):
    sets = [f"data.path={path}"] + [f"data.{k}={v}" for k, v in overrides.items()]
    return load_config(overrides=sets)
