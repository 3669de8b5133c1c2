"""Nuclei tiles with their stored tokens: one tile read at a time, one geometry for all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellbench.data.augment import NucleiAugment
from cellbench.errors import BadInputError
from cellbench.tasks.nuclei.dataset import NucleiDataset
from cellbench.tasks.nuclei.tokens import NucleiTokenDataset
from tests.helpers_nuclei import nuclei_features

__all__ = ["nuclei_features"]


def _dataset(features, augment=None, family="digestive"):
    store = features.parent.parent
    tiles = NucleiDataset(store, [1], family=family)
    return NucleiTokenDataset(tiles, {1: features / "fold1" / "tokens.npy"}, augment), tiles


def test_items_carry_the_tiles_tokens_from_a_memory_map(nuclei_features):
    dataset, tiles = _dataset(nuclei_features)
    stored = np.load(nuclei_features / "fold1" / "tokens.npy")
    item = dataset[1]
    _, tile = tiles.index[1]
    assert item["tokens"].dtype == torch.float16 and item["tokens"].shape == (2, 4, 4, 16)
    np.testing.assert_array_equal(item["tokens"].numpy(), stored[tile])
    assert isinstance(dataset._open[1], np.memmap)  # read tile by tile, never loaded whole
    assert dataset.token_shape == (2, 4, 4, 16)


def test_a_flip_moves_tokens_image_and_targets_together_and_flips_hv_signs(nuclei_features):
    flip = NucleiAugment(hflip=1.0, vflip=0.0, rot90=False)
    augmented, tiles = _dataset(nuclei_features, flip)
    plain, _ = _dataset(nuclei_features)
    a, p = augmented[0], plain[0]
    torch.testing.assert_close(a["tokens"], p["tokens"].flip(2))  # (L, G, G, D): columns
    torch.testing.assert_close(a["image"], p["image"].flip(2))
    torch.testing.assert_close(a["types"], p["types"].flip(1))
    torch.testing.assert_close(a["hv"][0], -p["hv"][0].flip(1))  # x changes sign
    torch.testing.assert_close(a["hv"][1], p["hv"][1].flip(1))


def test_a_quarter_turn_rotates_the_token_grid_like_the_image(nuclei_features):
    torch.manual_seed(0)
    turn = NucleiAugment(hflip=0.0, vflip=0.0, rot90=True)
    augmented, _ = _dataset(nuclei_features, turn)
    plain, _ = _dataset(nuclei_features)
    p = plain[0]
    for _ in range(8):  # draws k in 0..3; each must match the same rotation of the plain item
        a = augmented[0]
        k = next(k for k in range(4) if torch.equal(a["types"], p["types"].rot90(k, (0, 1))))
        torch.testing.assert_close(a["tokens"], p["tokens"].rot90(k, (1, 2)))
        torch.testing.assert_close(a["image"], p["image"].rot90(k, (1, 2)))


def test_tokens_of_another_store_are_refused(nuclei_features, tmp_path):
    wrong = tmp_path / "tokens.npy"
    np.save(wrong, np.zeros((3, 2, 4, 4, 16), np.float16))  # 3 tiles for a 16-tile fold
    tiles = NucleiDataset(nuclei_features.parent.parent, [1])
    with pytest.raises(BadInputError, match=r"tokens.npy: 3 tiles of tokens for 16 tiles"):
        NucleiTokenDataset(tiles, {1: wrong})


def test_online_items_carry_the_raw_uint8_tile_instead_of_tokens(nuclei_features):
    tiles = NucleiDataset(nuclei_features.parent.parent, [1], family="digestive")
    item = NucleiTokenDataset(tiles, None)[0]
    assert "tokens" not in item and item["raw"].dtype == torch.uint8
    assert item["raw"].shape == (64, 64, 3)
