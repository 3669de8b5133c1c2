"""Nuclei of one tile's maps as *detections*: the plain records the slide pipeline streams
(``cellbench.inference.pipeline``) and its writers turn into GeoJSON, tables and overlays.

This runs in the slide pipeline's post-processing worker processes: numpy, scipy and
scikit-image, no torch call.

A detection is a dict, in the tile's pixel coordinates (QuPath's convention: pixel (r, c) covers
[c, c+1) x [r, r+1)):

    x, y         centroid (mean of the pixel centres)
    area         pixels
    rings        closed outlines, one per connected piece ([[x, y], ...])
    cls, color   classification name and RGB colour
    probability  mean probability of its type over the nucleus (NaN without a type head)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellbench.tasks.nuclei.export.colors import type_color, type_name
from cellbench.tasks.nuclei.export.geojson import nucleus_rings
from cellbench.tasks.nuclei.postproc import PostProcParams, postprocess_tile


def instance_detections(
    inst: np.ndarray,
    types: dict[int, tuple[int, float]] | None = None,
    core: tuple[float, float, float, float] | None = None,
) -> list[dict[str, Any]]:
    """The detections of an instance map and post-processing's ``{id: (type, probability)}``;
    with ``core`` (x0, y0, x1, y1), only the nuclei whose centroid lies in it (x0 <= x < x1,
    y0 <= y < y1): a slide tile outlines the nuclei it keeps, not those of its margin that
    the neighbouring tiles keep."""
    inst = np.asarray(inst)
    types = types or {}
    labels = inst.ravel().astype(np.int64)
    k = int(inst.max()) if inst.size else 0
    area = np.bincount(labels, minlength=k + 1)
    rows, cols = np.indices(inst.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        # +0.5: the centre of pixel (r, c) is (c + 0.5, r + 0.5) in the rings' coordinates
        cx = np.bincount(labels, cols.ravel(), k + 1) / area + 0.5
        cy = np.bincount(labels, rows.ravel(), k + 1) / area + 0.5
    wanted = None
    if core is not None:
        x0, y0, x1, y1 = core
        inside = (x0 <= cx) & (cx < x1) & (y0 <= cy) & (cy < y1)
        wanted = np.flatnonzero(inside[1:]) + 1
    out = []
    for nucleus, rings in nucleus_rings(inst, ids=wanted).items():
        kind, probability = types.get(nucleus, (0, float("nan")))
        out.append(
            {
                "x": float(cx[nucleus]),
                "y": float(cy[nucleus]),
                "area": int(area[nucleus]),
                "rings": rings,
                "cls": type_name(kind),
                "color": list(type_color(kind)),
                "probability": float(probability),
            }
        )
    return out


def maps_detections(
    maps: tuple[np.ndarray, np.ndarray, np.ndarray],
    core: tuple[float, float, float, float] | None = None,
    *,
    params: PostProcParams,
) -> list[dict[str, Any]]:
    """Post-process one tile's (np_prob, hv, nt_prob) maps into detections (those centred in
    ``core`` when given)."""
    np_prob, hv, nt = maps
    inst, types = postprocess_tile(np_prob, hv, nt, params)
    return instance_detections(inst, types, core)
