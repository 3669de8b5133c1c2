"""Small generated datasets (64x64 tiles) shared by the data tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cellbench.data.prepare import prepare
from cellbench.data.synth import synth

TILES = 6
SIZE = 64


@pytest.fixture(scope="session")
def raw_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "pannuke"
    synth(root, folds=3, tiles=TILES, seed=7, size=SIZE)
    return root


@pytest.fixture(scope="session")
def store_master(raw_master, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "store"
    prepare(raw_master, out)
    return out


@pytest.fixture
def raw_dir(raw_master, tmp_path) -> Path:
    """A private copy of the generated raw dataset, free to corrupt."""
    return Path(shutil.copytree(raw_master, tmp_path / "pannuke"))


@pytest.fixture
def store_dir(store_master, tmp_path) -> Path:
    return Path(shutil.copytree(store_master, tmp_path / "store"))


def write_flat_fold(root: Path, fold: int, images, masks, tissues) -> Path:
    """Write a raw fold in the flat layout from arrays."""
    folder = root / f"fold{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    np.save(folder / "types.npy", np.asarray(tissues))
    return folder
