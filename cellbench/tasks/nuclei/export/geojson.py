"""Nuclei as a GeoJSON FeatureCollection that QuPath opens (File > Import objects, or drag and
drop): one Feature per nucleus, its contour a Polygon (a MultiPolygon when the nucleus is in
several pieces), with the properties QuPath reads:

- ``objectType``: ``"detection"`` (QuPath's cells/nuclei layer; ``"annotation"`` also allowed);
- ``classification``: ``{"name": "Neoplastic", "color": [255, 0, 0]}``;
- ``measurements``: ``{"type probability": p, "area (px)": a}``, shown in QuPath's tables.

Coordinates are pixels of the image, x to the right and y down, with QuPath's convention that
pixel (row r, column c) covers the square [c, c+1) x [r, r+1): its centre is (c + 0.5, r + 0.5).
Contours are scikit-image's marching squares (``skimage.measure.find_contours``) at level 0.5
of each nucleus' mask, which runs halfway between its pixel centres and its neighbours', so the
polygon rasterised back (pixel centres inside it) gives the nucleus' pixels again. Rings are
closed (last point = first). Holes inside a nucleus are not drawn (a nucleus is one solid
outline, as QuPath's own cell detection draws them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from cellbench.atomic import atomic_write_json
from cellbench.tasks.nuclei.export.colors import type_color, type_name
from cellbench.tasks.nuclei.export.simplify import approximate_polygons

Ring = list[list[float]]


def _component_ring(component: np.ndarray) -> np.ndarray:
    """Outer contour (row, col) of one connected blob, in the blob's crop coordinates."""
    filled = ndimage.binary_fill_holes(component)
    padded = np.pad(filled, 1).astype(np.float32)  # padding closes every contour
    contours = find_contours(padded, 0.5)
    return max(contours, key=len) - 1.0  # the outline, not the outline of a hole; undo the pad


def nucleus_rings(
    inst: np.ndarray,
    offset: tuple[float, float] = (0.0, 0.0),
    tolerance: float = 0.25,
    ids: Iterable[int] | None = None,
) -> dict[int, list[Ring]]:
    """``{id: [ring, ...]}``: one closed ring of [x, y] points per connected piece of each
    nucleus (of those in ``ids`` when given), in image pixel coordinates (QuPath's
    convention), shifted by ``offset`` (x, y) when the tile sits inside a larger image. Each
    nucleus is cropped to its bounding box (``ndimage.find_objects``), so the cost follows the
    nuclei, not the image size."""
    inst = np.asarray(inst)
    boxes = ndimage.find_objects(inst)
    chosen = range(1, len(boxes) + 1) if ids is None else sorted({int(i) for i in ids})
    pieces_of: list[tuple[int, tuple[slice, ...], np.ndarray]] = []
    for index in chosen:
        box = boxes[index - 1] if 0 < index <= len(boxes) else None
        if box is None:
            continue
        pieces, count = ndimage.label(inst[box] == index)
        pieces_of += [(index, box, _component_ring(pieces == p)) for p in range(1, count + 1)]
    # marching squares puts a point on every pixel edge: drop the collinear ones, every ring of
    # the image in one pass (simplify.py: the same points as skimage's approximate_polygon)
    rings = [ring for _, _, ring in pieces_of]
    long = [k for k, ring in enumerate(rings) if len(ring) > 4]  # shorter ones kept as they are
    simplified = approximate_polygons([rings[k] for k in long], tolerance)
    for k, ring in zip(long, simplified, strict=True):
        rings[k] = ring
    out: dict[int, list[Ring]] = {}
    for (index, box, _), ring in zip(pieces_of, rings, strict=True):
        xs = (ring[:, 1] + box[1].start + 0.5 + offset[0]).tolist()
        ys = (ring[:, 0] + box[0].start + 0.5 + offset[1]).tolist()
        points = [[round(x, 3), round(y, 3)] for x, y in zip(xs, ys, strict=True)]
        if points[0] != points[-1]:
            points.append(points[0])
        out.setdefault(index, []).append(points)
    return out


def _geometry(rings: list[Ring]) -> dict[str, Any]:
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": [rings[0]]}
    return {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]}


def nuclei_features(
    inst: np.ndarray,
    types: dict[int, tuple[int, float]] | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    object_type: str = "detection",
    tolerance: float = 0.25,
) -> list[dict[str, Any]]:
    """GeoJSON Features of the nuclei of an instance map; ``types`` is post-processing's
    ``{id: (type 1..5, mean probability)}`` (a nucleus missing from it is "Nucleus")."""
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be detection or annotation, got {object_type!r}")
    types = types or {}
    areas = np.bincount(np.asarray(inst).ravel().astype(np.int64))
    features = []
    for nucleus, rings in nucleus_rings(inst, offset, tolerance).items():
        kind, probability = types.get(nucleus, (0, float("nan")))
        measurements: dict[str, float] = {"area (px)": int(areas[nucleus])}
        if not np.isnan(probability):
            measurements["type probability"] = round(float(probability), 4)
        features.append(
            {
                "type": "Feature",
                "geometry": _geometry(rings),
                "properties": {
                    "objectType": object_type,
                    "classification": {"name": type_name(kind), "color": list(type_color(kind))},
                    "isLocked": False,
                    "measurements": measurements,
                    "nucleus_id": int(nucleus),
                },
            }
        )
    return features


def nuclei_geojson(
    inst: np.ndarray,
    types: dict[int, tuple[int, float]] | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    object_type: str = "detection",
) -> dict[str, Any]:
    """A FeatureCollection of the nuclei of one instance map."""
    return {
        "type": "FeatureCollection",
        "features": nuclei_features(inst, types, offset, object_type),
    }


def write_geojson(path: str | os.PathLike, collection: dict[str, Any]) -> None:
    """Written atomically: a crash never leaves a torn file for QuPath to choke on."""
    atomic_write_json(path, collection)
