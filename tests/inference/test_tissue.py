"""The tissue mask: glass is background, stained tissue is kept, a slide that is tissue
everywhere is kept whole."""

from __future__ import annotations

import numpy as np

from cellbench.inference.tiling import plan_geometry, tile_grid
from cellbench.inference.tissue import tissue_mask


def _stain(shape, rng):
    base = np.array([200, 120, 170], np.float32)  # pink-purple H&E
    return np.clip(base + rng.normal(0, 12, (*shape, 3)), 0, 255).astype(np.uint8)


def test_glass_is_background_and_its_tiles_are_skipped():
    rng = np.random.default_rng(0)
    thumb = np.clip(245 + rng.normal(0, 3, (40, 60, 3)), 0, 255).astype(np.uint8)
    thumb[5:30, 4:30] = _stain((25, 26), rng)
    mask = tissue_mask(thumb, factor=8)
    assert mask.mask[10:25, 8:25].all() and not mask.mask[:, 40:].any()
    assert mask.regions.max() == 1 and mask.region_of(15 * 8, 15 * 8) == 1
    g = plan_geometry([(480, 320, 1.0)], 0.25, 0.25, 64, 16)
    kept = [t for t in tile_grid(g) if mask.keeps(t)]
    assert 0 < len(kept) < len(tile_grid(g))
    assert all(t.u + t.core[0] < 40 * 8 for t in kept)  # none over the glass on the right
    assert tissue_mask(thumb, factor=8, mode="none").mask.all()


def test_a_slide_of_tissue_everywhere_is_kept_whole():
    rng = np.random.default_rng(1)
    thumb = _stain((30, 30), rng)
    thumb[:, 15:] = (thumb[:, 15:] * 0.7).astype(np.uint8)  # two stain intensities
    assert tissue_mask(thumb, factor=8).mask.all()
