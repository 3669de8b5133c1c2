"""Whole-slide readers: one interface over OpenSlide, tifffile and plain images.

    reader = open_slide("case.svs")
    reader.levels            # [(width, height, downsample), ...] level 0 first
    reader.mpp               # µm per pixel of level 0, or None when the file does not say
    reader.read(level, x, y, w, h)  # uint8 (h, w, 3); x, y in that level's pixels

- **OpenSlide** (``openslide-python``, its library from ``openslide-bin``) reads what it knows:
  Aperio SVS, Hamamatsu NDPI/VMS, MIRAX MRXS, Leica SCN, Philips TIFF, Ventana BIF, generic tiled
  TIFF... µm/px comes from ``openslide.mpp-x``/``-y``.
- **tifffile** reads the TIFFs OpenSlide does not (OME-TIFF, a tiled TIFF with SubIFD levels,
  a stripped TIFF): the pyramid levels are tifffile's series levels, a tiled level is read tile by
  tile (only the tiles a region touches are decoded), µm/px from the OME pixel size or the
  X/YResolution tags with their unit.
- **Pillow** reads plain images (PNG, JPEG, small TIFFs) whole: no pyramid; µm/px from the
  resolution the file records (dpi), if any.

Regions outside the slide read as white (background), so a tile at the edge needs no special
case. Every reader is safe to use from several threads (OpenSlide is; tifffile reads under the
file handle's lock and decodes outside it).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from cellbench.errors import BadInputError, one_line

# formats only OpenSlide reads (a .tif/.tiff goes to OpenSlide too when it recognises it)
OPENSLIDE_SUFFIXES = {".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".svslide", ".bif"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8"}
BACKENDS = ("auto", "openslide", "tifffile", "pillow")

_UNIT_UM = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: inch, centimetre -> µm


class SlideReader:
    """A slide's pyramid. Subclasses fill ``levels`` and ``mpp`` and implement ``_read``."""

    backend = ""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.levels: list[tuple[int, int, float]] = []
        self.mpp: float | None = None

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.levels[0][0], self.levels[0][1]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """uint8 (h, w, 3) of ``level`` at (x, y) in that level's pixels; white outside."""
        lw, lh, _ = self.levels[level]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OpenSlideReader(SlideReader):
    backend = "openslide"

    def __init__(self, path: Path):
        import openslide

        super().__init__(path)
        self._slide = openslide.OpenSlide(str(path))
        self.levels = [
            (int(w), int(h), float(d))
            for (w, h), d in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        ]
        props = self._slide.properties
        try:
            mx, my = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
            self.mpp = (mx + my) / 2 if mx > 0 and my > 0 else None
        except (KeyError, ValueError):
            self.mpp = None

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        d = self.levels[level][2]
        # OpenSlide takes the location in level-0 pixels and the size in the level's (at a
        # downsample that is not a whole number, it interpolates a fraction of a pixel)
        region = self._slide.read_region((round(x * d), round(y * d)), level, (w, h))
        rgba = np.asarray(region)
        alpha = rgba[..., 3:4].astype(np.uint16)
        # transparent = not scanned: composite on white like the background
        return ((rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


def _tiff_mpp(page, ome_xml: str | None) -> float | None:
    if ome_xml:
        import re

        sizes = [
            float(v)
            for v in re.findall(r'PhysicalSize[XY]="([0-9.eE+-]+)"', ome_xml)
            if float(v) > 0
        ]
        units = re.findall(r'PhysicalSize[XY]Unit="([^"]+)"', ome_xml)
        if sizes and all(u in ("µm", "um", "\u00b5m") for u in units):
            return sum(sizes) / len(sizes)
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    unit = _UNIT_UM.get(int(tags["ResolutionUnit"].value))
    num, den = tags["XResolution"].value
    if unit is None or not num or not den:
        return None
    pixels_per_unit = num / den
    # 1 pixel per unit (or less) is what writers put when they know nothing
    return unit / pixels_per_unit if pixels_per_unit > 1 else None


class TiffReader(SlideReader):
    backend = "tifffile"

    def __init__(self, path: Path):
        import tifffile

        super().__init__(path)
        self._tif = tifffile.TiffFile(str(path))
        series = self._tif.series[0]
        self._pages = [level.pages[0] for level in series.levels]
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        w0 = None
        for page in self._pages:
            if page.samplesperpixel not in (3, 4) and page.photometric != 1:
                raise BadInputError(f"{path}: {page.samplesperpixel} samples per pixel, not RGB")
            h, w = page.imagelength, page.imagewidth
            w0 = w0 or w
            self.levels.append((int(w), int(h), float(w0) / float(w)))
        self.mpp = _tiff_mpp(self._pages[0], self._tif.ome_metadata)

    def _rgb(self, a: np.ndarray) -> np.ndarray:
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        a = a[..., :3]
        if a.dtype != np.uint8:
            top = float(np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else 1.0
            a = np.clip(a.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
        return a

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        if not page.is_tiled:
            # a stripped page is read whole once: such files are small (scanners write tiles)
            with self._lock:
                if level not in self._cache:
                    self._cache[level] = self._rgb(page.asarray())
            return self._cache[level][y : y + h, x : x + w]
        th, tw = page.tilelength, page.tilewidth
        across = math.ceil(page.imagewidth / tw)
        out = np.empty((h, w, 3), np.uint8)
        fh = self._tif.filehandle
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                index = ty * across + tx
                with fh.lock:  # one file position for every thread: seek+read under the lock
                    fh.seek(page.dataoffsets[index])
                    data = fh.read(page.databytecounts[index])
                tile, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                tile = self._rgb(np.asarray(tile).reshape(th, tw, -1).squeeze())
                # the part of this tile inside the region
                gx0, gy0 = tx * tw, ty * th
                sx0, sy0 = max(x, gx0), max(y, gy0)
                sx1, sy1 = min(x + w, gx0 + tw), min(y + h, gy0 + th)
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                    sy0 - gy0 : sy1 - gy0, sx0 - gx0 : sx1 - gx0
                ]
        return out

    def close(self) -> None:
        self._tif.close()


class ImageReader(SlideReader):
    backend = "pillow"

    def __init__(self, path: Path):
        from PIL import Image

        super().__init__(path)
        with Image.open(path) as opened:
            opened.load()
            dpi = opened.info.get("dpi")
            self._image = np.asarray(opened.convert("RGB"))
        h, w = self._image.shape[:2]
        self.levels = [(w, h, 1.0)]
        if dpi and float(dpi[0]) > 1:
            self.mpp = 25_400.0 / float(dpi[0])

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._image[y : y + h, x : x + w]


def is_slide(path: str | os.PathLike) -> bool:
    """A file that goes through the slide pipeline without being asked to: an OpenSlide format,
    or a TIFF that is tiled or has pyramid levels (a plain tile stays on the image path)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            page = tif.pages[0]
            return bool(page.is_tiled or len(tif.series[0].levels) > 1)
    except Exception:  # not a TIFF after all: the image path reports it
        return False


def open_slide(path: str | os.PathLike, backend: str = "auto") -> SlideReader:
    """The reader for ``path``; a file no backend reads is a BadInputError naming it."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not path.is_file():
        raise BadInputError(f"{path}: slide not found")
    name = path.name.lower()
    if backend == "auto":
        backend = "pillow"
        if name.endswith((".ome.tif", ".ome.tiff")):
            backend = "tifffile"
        elif path.suffix.lower() in OPENSLIDE_SUFFIXES or path.suffix.lower() in TIFF_SUFFIXES:
            backend = "openslide" if _openslide_format(path) else "tifffile"
    kinds = {"openslide": OpenSlideReader, "tifffile": TiffReader, "pillow": ImageReader}
    try:
        return kinds[backend](path)
    except BadInputError:
        raise
    except Exception as exc:  # each library has its own errors; all mean "cannot read it"
        raise BadInputError(f"{path}: cannot read slide ({backend}: {one_line(exc)})") from exc


def _openslide_format(path: Path) -> str | None:
    try:
        import openslide
    except Exception:  # library missing (ImportError, OSError): tifffile reads the TIFFs
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None
