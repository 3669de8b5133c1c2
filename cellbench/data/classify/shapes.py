"""A small generated image-classification dataset: coloured shapes on noisy backgrounds.

The class is the shape. Size, position, rotation, colours, noise level and a few clutter lines
vary per image, so a linear model on pixels does poorly while a small CNN learns it to >90% in a
few CPU epochs. Tests, benchmarks and ``cellbench quickstart`` use it; nothing is downloaded.

Deterministic: image ``i`` of class ``c`` is drawn from ``default_rng([seed, c, i])``, so adding
images or classes never changes the existing ones. The folder is written under a temporary name
and renamed at the end: an interrupted run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cellbench.atomic import atomic_write_json
from cellbench.data.classify.splits import split_counts
from cellbench.errors import BadInputError, UsageError

MANIFEST = "shapes.json"
SPLIT_RATIOS = (0.15, 0.15)  # val, test share per class in the "split" layout
_SPLIT_STREAM = 2**32 - 1  # rng stream of the split assignment, apart from the images (0..n-1)


def _polygon(kind: str, n_points: int = 0) -> list[tuple[float, float]]:
    """Unit-radius outline of a shape centred on the origin."""
    if kind == "square":
        return [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    if kind == "triangle":
        return [(math.cos(a), math.sin(a)) for a in np.deg2rad([90, 210, 330])]
    if kind == "cross":
        w = 0.36
        return [(w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1), (w, -1),
                (w, -w), (1, -w), (1, w), (w, w)]  # fmt: skip
    if kind == "star":
        angles = np.deg2rad(np.arange(10) * 36 + 90)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True)]
    if kind == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.deg2rad(np.arange(6) * 60)]
    raise KeyError(kind)


SHAPES = ("circle", "square", "triangle", "cross", "star", "hexagon")
DEFAULT_CLASSES = ("circle", "square", "triangle", "cross")


def _colour(rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high + 1, size=3)


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``kind`` with random pose, colours, clutter and noise."""
    # dark backgrounds, light shapes: colours vary freely within each range, the contrast holds
    background = _colour(rng, 0, 120)
    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 3))):  # clutter lines in other colours
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in _colour(rng, 0, 255)), width=1)
    radius = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    fill = tuple(int(v) for v in _colour(rng, 130, 255))
    if kind == "circle":
        aspect = rng.uniform(0.85, 1.0)  # near-circles, never confusable with a square's corners
        rx, ry = radius, radius * aspect
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        points = [
            (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
            for x, y in _polygon(kind)
        ]
        draw.polygon(points, fill=fill)
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(4.0, 16.0), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


@dataclass
class ShapesDataset:
    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]  # {split: {class: n}}; split "all" for the flat layout
    odd_modes: int  # images stored as grayscale or RGBA
    created: bool  # False when an identical dataset was already there


def _odd_mode(index: int, odd_modes: bool) -> str | None:
    # the first two images of each class, when asked: one grayscale, one RGBA
    if not odd_modes:
        return None
    return {0: "L", 1: "RGBA"}.get(index)


def write_shapes_dataset(
    root: str | Path,
    classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    n_per_class: int = 60,
    image_size: int = 32,
    seed: int = 0,
    layout: str = "flat",
    odd_modes: bool = False,
) -> ShapesDataset:
    """Write PNGs as ``root/<class>/`` ("flat") or ``root/{train,val,test}/<class>/`` ("split")."""
    root = Path(root)
    classes = list(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes:
        raise UsageError(f"unknown shape class(es) {unknown}; choose from {', '.join(SHAPES)}")
    if layout not in ("flat", "split"):
        raise UsageError(f"layout must be 'flat' or 'split', got {layout!r}")
    if n_per_class < 1 or image_size < 8:
        raise UsageError("n_per_class must be >= 1 and image_size >= 8")
    manifest = dict(
        generator="cellbench.shapes/1", classes=classes, n_per_class=n_per_class,
        image_size=image_size, seed=seed, layout=layout, odd_modes=odd_modes,
    )  # fmt: skip
    counts = _counts(classes, n_per_class, layout)
    n_odd = sum(_odd_mode(i, odd_modes) is not None for i in range(n_per_class)) * len(classes)
    if root.exists():
        existing = root / MANIFEST
        if existing.is_file() and _read_manifest(existing) == manifest:
            return ShapesDataset(root, classes, counts, n_odd, created=False)
        if any(root.iterdir()):
            raise BadInputError(
                f"{root}: folder exists and is not this shapes dataset; choose an empty folder"
            )
    staging = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for label, kind in enumerate(classes):
            splits = _split_assignment(n_per_class, seed, label) if layout == "split" else None
            for i in range(n_per_class):
                image = draw_shape(kind, image_size, np.random.default_rng([seed, label, i]))
                mode = _odd_mode(i, odd_modes)
                if mode:
                    image = image.convert(mode)
                folder = staging / str(splits[i]) / kind if splits is not None else staging / kind
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{kind}_{i:05d}.png", compress_level=1)
        atomic_write_json(staging / MANIFEST, manifest)
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ShapesDataset(root, classes, counts, n_odd, created=True)


def foreign_entries(root: str | Path) -> list[Path]:
    """Entries of a generated shapes folder that this generator did not write (the user's):
    anything but its manifest and ``[split/]<class>/<class>_<n>.png`` of the classes it lists."""
    root = Path(root)
    manifest = _read_manifest(root / MANIFEST) or {}
    classes = [c for c in manifest.get("classes", []) if isinstance(c, str)]
    image = "|".join(re.escape(c) for c in classes) or "(?!)"
    ours = re.compile(rf"((train|val|test)/)?(?P<c>{image})/(?P=c)_\d{{5}}\.png|{MANIFEST}")
    foreign = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if not ours.fullmatch(rel) or Path(dirpath, name).is_symlink():
                foreign.append(Path(dirpath, name))
    return sorted(foreign)


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _split_assignment(n: int, seed: int, label: int) -> np.ndarray:
    """Per-image split names for one class of the "split" layout (shuffled, seeded)."""
    n_train, n_val, n_test = split_counts(n, *SPLIT_RATIOS)
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    return names[np.random.default_rng([seed, label, _SPLIT_STREAM]).permutation(n)]


def _counts(classes: list[str], n: int, layout: str) -> dict[str, dict[str, int]]:
    if layout == "flat":
        return {"all": {c: n for c in classes}}
    n_train, n_val, n_test = split_counts(n, *SPLIT_RATIOS)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    return {split: {c: k for c in classes} for split, k in sizes.items() if k}
