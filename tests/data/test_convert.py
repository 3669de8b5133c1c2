"""Raw masks -> instance and type maps, with each PanNuke quirk resolved and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellbench.data.convert import convert_images, convert_masks
from cellbench.errors import BadInputError

P = Path("masks.npy")


def _masks(n=1, h=6, w=6) -> np.ndarray:
    m = np.zeros((n, h, w, 6))
    m[..., 5] = 1
    return m


def _claim(m, tile, channel, rows, cols, ident):
    m[tile, rows, cols, channel] = ident
    m[tile, rows, cols, 5] = 0


def test_later_channel_wins_on_overlap_and_is_counted():
    m = _masks()
    _claim(m, 0, 0, slice(0, 3), slice(0, 3), 1)  # neoplastic
    _claim(m, 0, 4, slice(2, 4), slice(2, 4), 2)  # epithelial overlaps at (2, 2)
    inst, types, q = convert_masks(m, P)
    assert types[0, 2, 2] == 5 and types[0, 0, 0] == 1
    assert inst[0, 2, 2] != inst[0, 0, 0]
    assert q.overlap_pixels == 1 and q.overlap_tiles == 1


def test_ids_reused_across_channels_become_different_nuclei():
    m = _masks()
    _claim(m, 0, 1, slice(0, 2), slice(0, 2), 3)
    _claim(m, 0, 2, slice(4, 6), slice(4, 6), 3)  # same id 3, other channel
    inst, types, q = convert_masks(m, P)
    assert set(np.unique(inst[0])) == {0, 1, 2}  # compact, relabelled apart
    assert q.reused_ids == 1
    assert types[0, 0, 0] == 2 and types[0, 5, 5] == 3


def test_split_ids_are_kept_as_one_nucleus_and_counted():
    m = _masks()
    _claim(m, 0, 3, slice(0, 1), slice(0, 1), 8)
    _claim(m, 0, 3, slice(5, 6), slice(5, 6), 8)
    inst, _, q = convert_masks(m, P)
    assert inst[0, 0, 0] == inst[0, 5, 5] == 1
    assert q.split_ids == 1


def test_ids_are_compact_per_tile_and_empty_tiles_counted():
    m = _masks(n=3)
    _claim(m, 0, 0, slice(0, 2), slice(0, 2), 40)
    _claim(m, 0, 0, slice(3, 5), slice(3, 5), 17)
    _claim(m, 2, 2, slice(1, 3), slice(1, 3), 99)
    inst, _, q = convert_masks(m, P)
    assert inst.dtype == np.int32
    assert inst[0, 3, 3] == 1 and inst[0, 0, 0] == 2  # ordered by original id
    assert inst[2].max() == 1
    assert q.empty_tiles == 1 and q.background_mismatch_pixels == 0


def test_background_channel_disagreement_is_counted_not_used_as_a_class():
    m = _masks()
    _claim(m, 0, 0, slice(0, 2), slice(0, 2), 1)
    m[0, 0, 0, 5] = 1  # background says "background" on a nucleus pixel
    inst, types, q = convert_masks(m, P)
    assert q.background_mismatch_pixels == 1
    assert types.max() <= 5 and types[0, 0, 0] == 1


@pytest.mark.parametrize("bad", [np.nan, -1.0, 1.5])
def test_bad_ids_are_refused_naming_the_file(bad):
    m = _masks()
    m[0, 0, 0, 0] = bad
    with pytest.raises(BadInputError, match="masks.npy"):
        convert_masks(m, P)


def test_images_become_uint8_and_bad_values_are_refused():
    x = np.full((2, 2, 2, 3), 254.6)
    assert convert_images(x, Path("images.npy")).tolist()[0][0][0] == [255, 255, 255]
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(BadInputError, match=r"images.npy: NaN or inf in image of tile 1"):
        convert_images(x, Path("images.npy"))
    with pytest.raises(BadInputError, match="outside 0..255"):
        convert_images(np.full((1, 2, 2, 3), 300.0), Path("images.npy"))
