"""Sweep tests: a tiny generated shapes dataset and the smallest demo-profile trials."""

from __future__ import annotations

import pytest

from cellbench.data.classify.shapes import write_shapes_dataset

# each trial: simple_cnn with 4/8 channels on 16-px images, a few dozen images, one thread
TINY = [
    "data.image_size=16",
    "model.args.channels=[4,8]",
    "model.args.hidden=8",
    "train.batch_size=16",
    "train.warmup_epochs=0",
]


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-data") / "shapes"
    write_shapes_dataset(root, n_per_class=10, image_size=16, seed=0)
    return root


@pytest.fixture(scope="session")
def other_shapes(tmp_path_factory):
    """Other data for the final phase (seeds/000's RUN 2)."""
    root = tmp_path_factory.mktemp("sweep-data-2") / "shapes2"
    write_shapes_dataset(root, n_per_class=10, image_size=16, seed=1)
    return root


def tiny_sets(shapes) -> list[str]:
    args = []
    for text in [*TINY, f"data.path={shapes}"]:
        args += ["--set", text]
    return args
