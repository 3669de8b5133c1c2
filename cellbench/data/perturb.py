"""Imperfect "predictions" made from true instance and type maps, for scoring experiments.

Each nucleus is, with the given probabilities, eroded, dilated (into the background only),
dropped, split in two across its long axis, or given another type; touching nuclei are merged
in pairs. The nuclei metrics' tests cross-check cellbench against independent implementations
on such tiles, the benchmark measures them, and the README tour scores a perturbed copy of
generated data with ``cellbench eval pannuke``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cellbench.data.families import NUCLEUS_TYPES


@dataclass(frozen=True)
class Perturbation:
    erode: float = 0.15
    dilate: float = 0.15
    drop: float = 0.08
    split: float = 0.08
    merge: float = 0.08  # per nucleus: merge it with one touching neighbour
    retype: float = 0.1


def _split(mask: np.ndarray) -> np.ndarray:
    """The half of ``mask`` on one side of the line through its centroid, across its long
    axis (principal axis of the pixel coordinates)."""
    ys, xs = np.nonzero(mask)
    coords = np.stack([ys - ys.mean(), xs - xs.mean()])
    if coords.shape[1] < 2:
        return np.zeros_like(mask)
    _, vectors = np.linalg.eigh(coords @ coords.T)
    side = vectors[:, -1] @ coords > 0
    half = np.zeros_like(mask)
    half[ys[side], xs[side]] = True
    return half


def perturb_tile(
    inst: np.ndarray,
    types: np.ndarray,
    rng: np.random.Generator,
    how: Perturbation = Perturbation(),
) -> tuple[np.ndarray, np.ndarray]:
    """A perturbed copy (inst int32, types uint8) of one tile's maps (H, W)."""
    inst = np.array(inst, dtype=np.int32)
    types = np.array(types, dtype=np.uint8)
    next_id = int(inst.max()) + 1
    for nucleus in np.unique(inst[inst > 0]):
        mask = inst == nucleus
        if not mask.any():  # merged into a neighbour already
            continue
        kind = types[mask][0]
        roll = rng.random()
        edges = np.cumsum([how.erode, how.dilate, how.drop, how.split, how.merge, how.retype])
        if roll < edges[0]:
            inst[mask & ~ndimage.binary_erosion(mask)] = 0
        elif roll < edges[1]:
            grow = ndimage.binary_dilation(mask) & (inst == 0)
            inst[grow], types[grow] = nucleus, kind
        elif roll < edges[2]:
            inst[mask] = 0
        elif roll < edges[3]:
            inst[_split(mask)] = next_id
            next_id += 1
        elif roll < edges[4]:
            ring = ndimage.binary_dilation(mask) & ~mask
            neighbours = np.unique(inst[ring & (inst > 0)])
            if len(neighbours):
                other = inst == rng.choice(neighbours)
                inst[other], types[other] = nucleus, kind
        elif roll < edges[5]:
            choices = [t for t in range(1, len(NUCLEUS_TYPES) + 1) if t != kind]
            types[mask] = rng.choice(choices)
    types[inst == 0] = 0
    return inst, types


def perturb_tiles(
    inst: np.ndarray, types: np.ndarray, seed: int = 0, how: Perturbation = Perturbation()
) -> tuple[np.ndarray, np.ndarray]:
    """``perturb_tile`` over a stack (N, H, W), one generator per tile seeded by (seed, tile)."""
    out = [
        perturb_tile(inst[i], types[i], np.random.default_rng([seed, i]), how)
        for i in range(len(inst))
    ]
    if not out:
        return np.array(inst, np.int32), np.array(types, np.uint8)
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
