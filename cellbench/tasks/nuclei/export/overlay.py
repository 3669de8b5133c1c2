"""An overlay PNG: each nucleus' outline drawn over the image in its type's colour."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from cellbench.atomic import atomic_write
from cellbench.tasks.nuclei.export.colors import type_color


def overlay(
    image: np.ndarray, inst: np.ndarray, types: dict[int, tuple[int, float]] | None = None
) -> np.ndarray:
    """uint8 (H, W, 3): ``image`` with the inner boundary pixels of every nucleus coloured by
    type (``types`` as post-processing returns it; white for a nucleus without a type).
    ``mode="inner"`` keeps the outline on the nucleus' own pixels, so touching nuclei keep
    separate outlines and none is drawn outside the image."""
    image = np.asarray(image)
    inst = np.asarray(inst)
    if image.shape[:2] != inst.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.shape} and instance map {inst.shape} do not match")
    out = np.array(image, dtype=np.uint8, copy=True)
    if inst.max() == 0:
        return out
    types = types or {}
    lut = np.zeros((int(inst.max()) + 1, 3), dtype=np.uint8)
    for nucleus in range(1, len(lut)):
        lut[nucleus] = type_color(types.get(nucleus, (0, 0.0))[0])
    edges = find_boundaries(inst, mode="inner")
    out[edges] = lut[inst[edges]]
    return out


def write_overlay_png(
    path: str | os.PathLike,
    image: np.ndarray,
    inst: np.ndarray,
    types: dict[int, tuple[int, float]] | None = None,
) -> None:
    """The overlay as a PNG, written atomically."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, inst, types)).save(buffer, format="PNG")
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
