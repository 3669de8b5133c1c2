"""What the slide pipeline's worker processes run, outside ``cellbench.inference``.

A worker process unpickling a function imports that function's module and its parents, and
``cellbench.inference`` loads models at import. The task-agnostic part of the work the pool runs
lives here instead (numpy only); ``cellbench.inference.pipeline`` and ``cellbench.inference.slide``
send it, with the task's own post-processing (the predictor's ``tile_postprocessor``).

A *detection* (what a predictor's post-processing returns per object, see
``cellbench.tasks.nuclei.export.detections``) is a dict with at least ``x``, ``y`` (centroid),
``area`` (pixels) and ``rings`` (closed outlines [[x, y], ...]) in the tile's pixel coordinates.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any


def timed_call(fn: Callable, *args) -> tuple[Any, float]:
    """``(fn(*args), seconds it took)``: the busy time of the worker that ran it."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def core_detections(
    postprocess: Callable[[Any, tuple[int, int, int, int]], list[dict[str, Any]]],
    payload: Any,
    job: tuple[tuple[int, int, int, int], tuple[float, float]],
    scale: float,
    size: int,
) -> list[dict[str, Any]]:
    """Post-process one tile and keep the detections whose centroid lies in its core
    (``job`` = (core, origin); core = x0, y0, x1, y1 in pixels of the ``size`` x ``size`` tile):
    each object is kept by exactly one tile. Coordinates become the slide's:
    ``origin + tile_xy * scale``; ``area`` becomes slide pixels. ``geometry`` is the GeoJSON
    geometry as JSON text (made here, in the worker, not in the writer), and ``touches_edge``
    says that the outline reaches the tile's edge: the object may be cut (the margin is smaller
    than the object). ``postprocess(payload, core)`` may leave out the objects centred outside
    the core (it need not outline them); this rule is applied here again."""
    (x0, y0, x1, y1), (ox, oy) = job
    out = []
    for d in postprocess(payload, (x0, y0, x1, y1)):
        if not (x0 <= d["x"] < x1 and y0 <= d["y"] < y1):
            continue
        rings = [
            [[round(ox + x * scale, 2), round(oy + y * scale, 2)] for x, y in ring]
            for ring in d["rings"]
        ]
        edge = any(min(min(p) for p in ring) <= 0 for ring in d["rings"]) or any(
            max(max(p) for p in ring) >= size for ring in d["rings"]
        )
        geometry = (
            {"type": "Polygon", "coordinates": [rings[0]]}
            if len(rings) == 1
            else {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}
        )
        record = {k: v for k, v in d.items() if k != "rings"}
        record.update(
            x=ox + d["x"] * scale,
            y=oy + d["y"] * scale,
            area=d["area"] * scale * scale,
            geometry=json.dumps(geometry, separators=(",", ":")),
            touches_edge=bool(edge),
        )
        out.append(record)
    return out


def with_label(post: Callable[[Any, Any], Any], payload: tuple[Any, Any], job: Any):
    """``(post(maps, job), label)`` of a ``(maps, label)`` payload: a per-tile decision made on
    the device (``predict --organ-run``) rides along with the tile through the pool."""
    maps, label = payload
    return post(maps, job), label


def exit_with(pid: int, every_s: float = 1.0) -> None:
    """A process pool's initializer: the worker exits once process ``pid`` (the one that made
    the pool) is gone. A ``predict`` killed with SIGKILL would otherwise leave its workers
    waiting for work forever: under forkserver their parent is the fork server, not ``pid``,
    and they hold the killed command's stdout open (a caller reading it never gets EOF)."""

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, another user's (a reused pid): keep watching
                pass

    threading.Thread(target=watch, name="cellbench-parent-watch", daemon=True).start()
