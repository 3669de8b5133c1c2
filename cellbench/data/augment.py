"""Augmentations of nuclei samples that keep every target consistent with the image.

Geometric transforms are the 8 symmetries of the square (flips and 90-degree rotations). They map
pixels exactly, so instead of recomputing HV they transform it: a horizontal flip negates the
horizontal channel, a vertical flip the vertical one, a 90-degree rotation swaps the channels and
negates one. The result equals ``hv_map`` of the transformed instance map (tested), for free.
Colour jitter touches the image only. Pure numpy: usable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass
class NucleiSample:
    image: np.ndarray  # (H, W, 3) uint8 or float32 0..255
    inst: np.ndarray  # (H, W) int
    types: np.ndarray  # (H, W) uint8
    hv: np.ndarray  # (2, H, W) float32, channel 0 = x, 1 = y


def hflip(s: NucleiSample) -> NucleiSample:
    """Mirror left-right: x -> W-1-x, so the horizontal HV channel changes sign."""
    hv = s.hv[:, :, ::-1].copy()
    hv[0] *= -1
    return replace(s, image=s.image[:, ::-1], inst=s.inst[:, ::-1], types=s.types[:, ::-1], hv=hv)


def vflip(s: NucleiSample) -> NucleiSample:
    """Mirror top-bottom: y -> H-1-y, so the vertical HV channel changes sign."""
    hv = s.hv[:, ::-1, :].copy()
    hv[1] *= -1
    return replace(s, image=s.image[::-1], inst=s.inst[::-1], types=s.types[::-1], hv=hv)


def rot90(s: NucleiSample, k: int = 1) -> NucleiSample:
    """Rotate by k quarter turns counter-clockwise (``np.rot90``).

    One quarter turn sends (x, y) to (y, W-1-x): the new x channel is the old y channel and the
    new y channel is minus the old x channel.
    """
    k %= 4
    out = s
    for _ in range(k):
        hx = np.rot90(out.hv[0])
        hy = np.rot90(out.hv[1])
        out = NucleiSample(
            image=np.rot90(out.image),
            inst=np.rot90(out.inst),
            types=np.rot90(out.types),
            hv=np.stack([hy, -hx]),
        )
    return out


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter of +-strength; float32 0..255 out."""
    x = image.astype(np.float32)
    brightness, contrast, saturation = 1 + rng.uniform(-strength, strength, 3)
    x = x * brightness
    mean = x.mean()
    x = (x - mean) * contrast + mean
    grey = x.mean(axis=-1, keepdims=True)
    x = (x - grey) * saturation + grey
    return np.clip(x, 0, 255)


@dataclass(frozen=True)
class Geometry:
    """One drawn symmetry of the square: optional flips, then ``k`` quarter turns."""

    hflip: bool = False
    vflip: bool = False
    k: int = 0

    def apply(self, s: NucleiSample) -> NucleiSample:
        if self.hflip:
            s = hflip(s)
        if self.vflip:
            s = vflip(s)
        return rot90(s, self.k) if self.k else s

    def apply_grid(self, grid: np.ndarray, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
        """The same symmetry on any array whose ``axes`` are (rows, columns) of the tile: a
        token grid (L, G, G, D) with axes (1, 2). Moves values only (no sign changes)."""
        y, x = axes
        if self.hflip:
            grid = np.flip(grid, axis=x)
        if self.vflip:
            grid = np.flip(grid, axis=y)
        if self.k:
            grid = np.rot90(grid, self.k, axes=axes)
        return np.ascontiguousarray(grid)


@dataclass
class NucleiAugment:
    """Random flips, quarter turns and colour jitter for training tiles."""

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    color_jitter: float = 0.0

    @classmethod
    def from_config(cls, data: Any) -> NucleiAugment:
        """From a ``DataConfig`` (fields hflip, vflip, rot90, color_jitter)."""
        return cls(data.hflip, data.vflip, bool(data.rot90), data.color_jitter)

    def draw_geometry(self, rng: np.random.Generator) -> Geometry:
        flip_x = bool(rng.random() < self.hflip)
        flip_y = bool(rng.random() < self.vflip)
        return Geometry(flip_x, flip_y, int(rng.integers(4)) if self.rot90 else 0)

    def jitter(self, s: NucleiSample, rng: np.random.Generator) -> NucleiSample:
        if self.color_jitter > 0:
            s = replace(s, image=color_jitter(s.image, self.color_jitter, rng))
        return s

    def __call__(self, s: NucleiSample, rng: np.random.Generator) -> NucleiSample:
        return self.jitter(self.draw_geometry(rng).apply(s), rng)
