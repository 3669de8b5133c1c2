"""Slides for the slide tests and benchmark: a mosaic of generated tiles (``data synth``, whose
nuclei are known) written as a pyramidal tiled TIFF with tifffile, with or without resolution
tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mosaic(store: Path, rows: int, cols: int, fold: int = 3, background: int = 0) -> np.ndarray:
    """uint8 (rows x T, (cols + background) x T, 3): the fold's tiles side by side, row by row
    (repeated when there are fewer), and ``background`` columns of white glass on the right."""
    from cellbench.data.store import open_fold

    images = open_fold(Path(store), fold).images
    t = images.shape[1]
    out = np.full((rows * t, (cols + background) * t, 3), 255, np.uint8)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        out[r * t : (r + 1) * t, c * t : (c + 1) * t] = np.asarray(images[k % len(images)])[..., :3]
    return out


def write_pyramid(path: Path, image: np.ndarray, mpp: float | None, levels: int = 3) -> Path:
    """A tiled pyramidal TIFF (level k = image downsampled 2^k), 16-px tiles, zlib; resolution
    tags in pixels per centimetre when ``mpp`` is given (none at all otherwise)."""
    import tifffile
    from PIL import Image

    with tifffile.TiffWriter(path) as tif:
        level = image
        for k in range(levels):
            options = {"tile": (16, 16), "photometric": "rgb", "compression": "zlib"}
            if mpp is not None:
                scaled = mpp * 2**k
                options.update(resolution=(1e4 / scaled, 1e4 / scaled), resolutionunit="CENTIMETER")
            tif.write(level, subfiletype=1 if k else 0, **options)
            h, w = level.shape[:2]
            level = np.asarray(Image.fromarray(level).resize((max(1, w // 2), max(1, h // 2))))
    return path
