"""Where the tissue is: a low-resolution mask so background tiles are never read or run.

Otsu's threshold (``skimage.filters.threshold_otsu``) on the HSV saturation of a thumbnail: glass
and background are bright and grey, stained tissue is coloured. The threshold is kept within
[``MIN_SATURATION``, ``MAX_SATURATION``]: a slide that is tissue everywhere has no background mode
for Otsu to find, and would otherwise be split in two along its stain; a blank slide would
otherwise turn its noise into tissue. Small specks are removed and holes filled
(``scipy.ndimage``), then the mask grows by one thumbnail pixel so nuclei
at the tissue's edge keep their tile. Its connected pieces are the tissue *regions* the counts
are given per.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cellbench.inference.tiling import Geometry, Tile, read_model_region

MIN_SATURATION = 0.04
MAX_SATURATION = 0.15
THUMB_MAX_SIDE = 2048
THUMB_MIN_FACTOR = 8  # model pixels per thumbnail pixel, at least


@dataclass
class TissueMask:
    thumbnail: np.ndarray  # uint8 (h, w, 3): the region, `factor` model pixels per pixel
    mask: np.ndarray  # bool (h, w)
    regions: np.ndarray  # int32 (h, w): 0 = background, 1..R tissue pieces
    factor: int
    threshold: float | None  # the saturation threshold used (None: --tissue none)

    def keeps(self, tile: Tile) -> bool:
        """True when the tile's core touches tissue."""
        x0, y0, x1, y1 = tile.core
        f = self.factor
        cx0, cy0 = (tile.u + x0) // f, (tile.v + y0) // f
        cx1, cy1 = math.ceil((tile.u + x1) / f), math.ceil((tile.v + y1) / f)
        return bool(self.mask[cy0:cy1, cx0:cx1].any())

    def region_of(self, u: float, v: float) -> int:
        """The tissue region (1..R, 0 = none) of a point in model pixels of the region."""
        r = min(max(int(v // self.factor), 0), self.regions.shape[0] - 1)
        c = min(max(int(u // self.factor), 0), self.regions.shape[1] - 1)
        return int(self.regions[r, c])


def thumbnail_factor(geometry: Geometry) -> int:
    w, h = geometry.size
    return max(THUMB_MIN_FACTOR, math.ceil(max(w, h) / THUMB_MAX_SIDE))


def read_thumbnail(reader, geometry: Geometry, factor: int) -> np.ndarray:
    """The region at ``factor`` model pixels per pixel, from the coarsest level fine enough."""
    from dataclasses import replace

    w, h = geometry.size
    target = geometry.run_mpp * factor
    levels = [
        i for i, (_, _, d) in enumerate(reader.levels) if geometry.slide_mpp * d <= target * 1.001
    ]
    level = max(levels) if levels else 0
    coarse = replace(
        geometry,
        level=level,
        level_downsample=float(reader.levels[level][2]),
        run_mpp=target,
    )
    return read_model_region(reader, coarse, 0, 0, math.ceil(w / factor), math.ceil(h / factor))


def tissue_mask(thumbnail: np.ndarray, factor: int, mode: str = "auto") -> TissueMask:
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    if mode == "none":
        mask = np.ones(thumbnail.shape[:2], bool)
        return TissueMask(thumbnail, mask, mask.astype(np.int32), factor, None)
    saturation = rgb2hsv(thumbnail)[..., 1]
    try:
        otsu = float(threshold_otsu(saturation))
    except ValueError:  # a single value everywhere
        otsu = MAX_SATURATION
    threshold = min(max(otsu, MIN_SATURATION), MAX_SATURATION)
    mask = saturation > threshold
    pieces, _ = ndimage.label(mask)
    sizes = np.bincount(pieces.ravel())
    mask = (sizes > 4)[pieces] & mask  # specks of a few thumbnail pixels: dust, not tissue
    # closing joins tissue split by a thin gap; padded so the slide's edge is not eroded
    closed = ndimage.binary_closing(np.pad(mask, 2, mode="edge"), iterations=2)[2:-2, 2:-2]
    mask = ndimage.binary_fill_holes(closed)
    mask = ndimage.binary_dilation(mask, iterations=1)
    regions = label(mask, connectivity=2).astype(np.int32)
    return TissueMask(thumbnail, mask, regions, factor, threshold)
