"""Generated nuclei tiles (store instance and type maps) shared by the nuclei metrics tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellbench.data.convert import convert_masks
from cellbench.data.synth import synth_tile, tissues_for_fold


def generated_maps(n: int, size: int, seed: int = 0):
    """(inst int32, types uint8, tissues) of ``n`` generated tiles, as ``data prepare`` makes."""
    tissues = tissues_for_fold(np.random.default_rng(seed), n)
    masks = np.stack(
        [synth_tile(np.random.default_rng([seed, i]), t, size)[1] for i, t in enumerate(tissues)]
    )
    inst, types, _ = convert_masks(masks, Path("generated"))
    return inst, types, tissues


@pytest.fixture(scope="session")
def tiles():
    return generated_maps(10, 96, seed=3)
