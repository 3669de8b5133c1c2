"""The slide's geometry at the run's resolution and its grid of overlapping tiles.

Everything is planned in *model pixels*: the slide (or its ``--roi``) resampled to the µm/px the
run learned at. A model pixel ``(u, v)`` of the region is the slide's level-0 point
``(roi_x + u * r, roi_y + v * r)`` with ``r = run_mpp / slide_mpp``; it is read from the pyramid
level closest above the run's resolution and resampled (Pillow, Lanczos) when the two differ.

Tiles are the run's tile size ``T``, with a margin ``m`` on each side: tile (row, col) starts at
``(col * S - m, row * S - m)`` with stride ``S = T - 2m``, and its *core* is the ``S x S`` square
in the middle, clipped to the region. Cores partition the region, so a nucleus belongs to exactly
one tile, the one whose core holds its centroid; one whose centroid lies in a core is at least
``m`` pixels from that tile's edge, so a nucleus no larger than ``2m`` across is never cut.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from cellbench.errors import BadInputError, UsageError

RESAMPLE = Image.Resampling.LANCZOS


@dataclass(frozen=True)
class Geometry:
    level: int  # pyramid level read
    level_downsample: float
    slide_mpp: float  # µm/px of level 0
    run_mpp: float  # µm/px of the model's pixels
    roi: tuple[int, int, int, int]  # x, y, w, h in level-0 pixels
    tile: int  # T
    margin: int  # m

    @property
    def scale(self) -> float:
        """Level pixels per model pixel (1: read as is; 2: every other pixel; 0.5: upsampled)."""
        return self.run_mpp / (self.slide_mpp * self.level_downsample)

    @property
    def to_level0(self) -> float:
        """Level-0 pixels per model pixel."""
        return self.run_mpp / self.slide_mpp

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the region in model pixels."""
        r = self.to_level0
        return max(1, round(self.roi[2] / r)), max(1, round(self.roi[3] / r))

    @property
    def stride(self) -> int:
        return self.tile - 2 * self.margin

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        w, h = self.size
        return math.ceil(h / self.stride), math.ceil(w / self.stride)

    def to_dict(self) -> dict:
        return {**asdict(self), "scale": self.scale, "size": list(self.size)}


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    u: int  # top-left corner, model pixels of the region (may be negative: padded white)
    v: int
    core: tuple[int, int, int, int]  # x0, y0, x1, y1 in the tile's own pixels

    @property
    def key(self) -> str:
        return f"{self.row},{self.col}"


def plan_geometry(
    levels: list[tuple[int, int, float]],
    slide_mpp: float,
    run_mpp: float,
    tile: int,
    margin: int,
    level: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
) -> Geometry:
    """The level to read (the coarsest one still at least as fine as the run, unless ``level``
    is given), the region, and the tiling."""
    if not 0 <= margin < tile // 2:
        raise UsageError(f"tile margin {margin}: must be >= 0 and < half the tile ({tile})")
    w0, h0, _ = levels[0]
    if roi is None:
        roi = (0, 0, w0, h0)
    x, y, w, h = roi
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > w0 or y + h > h0:
        raise UsageError(f"--roi {x},{y},{w},{h}: outside the slide ({w0} x {h0} pixels)")
    if level is None:
        fine_enough = [i for i, (_, _, d) in enumerate(levels) if slide_mpp * d <= run_mpp * 1.001]
        level = max(fine_enough) if fine_enough else 0
    elif not 0 <= level < len(levels):
        raise UsageError(f"--level {level}: the slide has levels 0..{len(levels) - 1}")
    return Geometry(level, float(levels[level][2]), slide_mpp, run_mpp, tuple(roi), tile, margin)


def tile_grid(geometry: Geometry) -> list[Tile]:
    """Every tile of the region, row by row."""
    w, h = geometry.size
    s, m = geometry.stride, geometry.margin
    rows, cols = geometry.grid
    tiles = []
    for row in range(rows):
        for col in range(cols):
            x0, y0 = col * s, row * s
            core = (m, m, m + min(s, w - x0), m + min(s, h - y0))
            tiles.append(Tile(row, col, x0 - m, y0 - m, core))
    return tiles


def read_model_region(reader, geometry: Geometry, u: float, v: float, w: int, h: int, out=None):
    """uint8 (h, w, 3): the region's model pixels [u, u+w) x [v, v+h), read from the geometry's
    level and resampled to the run's resolution."""
    s = geometry.scale
    d = geometry.level_downsample
    lx = geometry.roi[0] / d + u * s
    ly = geometry.roi[1] / d + v * s
    if abs(s - 1.0) < 1e-9 and float(lx).is_integer() and float(ly).is_integer():
        return reader.read(geometry.level, int(lx), int(ly), w, h)
    x0, y0 = math.floor(lx), math.floor(ly)
    x1, y1 = math.ceil(lx + w * s), math.ceil(ly + h * s)
    pixels = reader.read(geometry.level, x0, y0, x1 - x0, y1 - y0)
    box = (lx - x0, ly - y0, lx - x0 + w * s, ly - y0 + h * s)
    return np.asarray(Image.fromarray(pixels).resize((w, h), RESAMPLE, box=box))


def read_tile(reader, geometry: Geometry, tile: Tile) -> np.ndarray:
    return read_model_region(reader, geometry, tile.u, tile.v, geometry.tile, geometry.tile)


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UsageError(f"--roi {text}: expected x,y,w,h in level-0 pixels (four integers)")
    return values  # type: ignore[return-value]


def check_mpp(path, mpp: float | None, given: float | None) -> float:
    """The slide's µm/px: ``--mpp`` when given, else its metadata; neither is refused."""
    if given is not None:
        if not given > 0:
            raise UsageError(f"--mpp {given}: must be > 0")
        return float(given)
    if mpp is None:
        raise BadInputError(
            f"{path}: no resolution (µm/px) in the file's metadata; give it with --mpp "
            "(a 40x scan is about 0.25, 20x about 0.5)"
        )
    return float(mpp)
