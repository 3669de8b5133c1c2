"""Training targets from instance maps: NP (nucleus/background) and HV (horizontal/vertical).

HV convention (DESIGN.md): for each nucleus, pixel coordinate minus the nucleus' exact float
centroid; the negative side is divided by its largest magnitude and the positive side by its
largest value, separately for x and y, so every nucleus spans exactly [-1, 1] on an axis where it
is more than one pixel wide. Background is 0; no small object is removed. Channel 0 is
horizontal (x, columns), channel 1 vertical (y, rows).

Choices worth knowing:
- HoVer-Net's reference code rounds the centroid to an integer pixel, so its zero sits up to half
  a pixel off; we keep the exact centroid (the zero crossing is where the centroid is).
- A pixel lying exactly on the centroid gets 0, hence a single-pixel nucleus is 0 on both axes and
  a nucleus one pixel wide on an axis is 0 on that axis.
- An id made of several connected pieces (PanNuke's "split ids") is one nucleus with one centroid.

Speed: nothing loops over nuclei in Python. Centroids are label-wise bincounts; the extreme
coordinates of a nucleus on each axis are label-wise ``np.minimum.at``/``np.maximum.at`` over
the pixel coordinates, because ``min(x - cx) = xmin - cx`` (about 3x faster than a Python loop
over ``scipy.ndimage.find_objects`` boxes, see benchmarks/bench_hv.py). A whole chunk of tiles is
done in one pass by offsetting ids per tile.
"""

from __future__ import annotations

import numpy as np

HV_DTYPE = np.float32


def np_map(inst: np.ndarray) -> np.ndarray:
    """Nucleus-pixel mask (uint8 0/1) of an instance map of any shape."""
    return (inst > 0).astype(np.uint8)


def global_labels(inst: np.ndarray) -> tuple[np.ndarray, int]:
    """Offset each tile's ids so that they are unique across the batch; 0 stays background."""
    inst = inst.astype(np.int64, copy=False)
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0")
    max_per_tile = inst.reshape(len(inst), -1).max(axis=1) if inst.size else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(max_per_tile)[:-1]]).astype(np.int64)
    labels = np.where(inst > 0, inst + offsets[:, None, None], 0)
    return labels, int(max_per_tile.sum())


def hv_maps(inst: np.ndarray) -> np.ndarray:
    """HV targets (N, 2, H, W) float32 for a batch of instance maps (N, H, W).

    Ids need not be contiguous, but the cost grows with the largest id (store maps are compact).
    """
    if inst.ndim != 3:
        raise ValueError(f"expected instance maps (N, H, W), got shape {inst.shape}")
    n, h, w = inst.shape
    labels, n_labels = global_labels(inst)
    out = np.zeros((n, 2, h, w), dtype=HV_DTYPE)
    if n_labels == 0:
        return out
    flat = labels.ravel()
    fg = flat > 0
    lab = flat[fg]
    ys, xs = np.unravel_index(np.flatnonzero(fg), (n, h, w))[1:]
    area = np.bincount(lab, minlength=n_labels + 1).astype(np.float64)
    present = area > 0
    safe_area = np.where(present, area, 1.0)
    cx = np.bincount(lab, weights=xs, minlength=n_labels + 1) / safe_area
    cy = np.bincount(lab, weights=ys, minlength=n_labels + 1) / safe_area
    for axis, coord, centre in ((0, xs, cx), (1, ys, cy)):
        # Each nucleus' extreme coordinates on this axis (absent labels keep lo > hi, unused).
        lo = np.full(n_labels + 1, max(h, w), dtype=np.int64)
        hi = np.zeros(n_labels + 1, dtype=np.int64)
        np.minimum.at(lo, lab, coord)
        np.maximum.at(hi, lab, coord)
        neg_scale = centre - lo  # largest magnitude on the negative side
        pos_scale = hi - centre  # largest value on the positive side
        d = coord - centre[lab]
        scale = np.where(d < 0, neg_scale[lab], pos_scale[lab])
        # d == 0 (pixel on the centroid, or a 1-pixel-wide axis) gives 0, never 0/0.
        v = np.divide(d, scale, out=np.zeros_like(d), where=scale > 0)
        full = np.zeros(n * h * w, dtype=np.float64)
        full[fg] = v
        out[:, axis] = full.reshape(n, h, w)
    return out


def hv_map(inst: np.ndarray) -> np.ndarray:
    """HV target (2, H, W) float32 of one instance map (H, W)."""
    if inst.ndim != 2:
        raise ValueError(f"expected an instance map (H, W), got shape {inst.shape}")
    return hv_maps(inst[None])[0]


def compact_ids(inst: np.ndarray) -> np.ndarray:
    """Relabel one tile's ids to 1..K in increasing order of the old ids (0 stays 0)."""
    ids, inverse = np.unique(inst, return_inverse=True)
    offset = 1 if ids.size and ids[0] == 0 else 0
    if offset == 0:
        return (inverse + 1).reshape(inst.shape).astype(np.int32)
    return inverse.reshape(inst.shape).astype(np.int32)


def hv_map_reference(inst: np.ndarray) -> np.ndarray:
    """The HV convention written straight, one full-image pass per nucleus.

    Slow on purpose: it is the definition ``hv_map`` is tested against and the baseline
    ``benchmarks/bench_hv.py`` measures it against.
    """
    out = np.zeros((2,) + inst.shape, np.float64)
    ys, xs = np.mgrid[: inst.shape[0], : inst.shape[1]]
    for i in np.unique(inst[inst > 0]):
        m = inst == i
        for axis, coord in ((0, xs), (1, ys)):
            d = coord[m] - coord[m].mean()
            v = np.zeros_like(d)
            if (d < 0).any():
                v[d < 0] = d[d < 0] / -d.min()
            if (d > 0).any():
                v[d > 0] = d[d > 0] / d.max()
            out[axis][m] = v
    return out.astype(np.float32)
