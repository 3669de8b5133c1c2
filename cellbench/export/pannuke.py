"""Predictions written in PanNuke's format, so any PanNuke scorer reads them (``cellbench eval
pannuke --pred DIR``, PanNuke-metrics, CellViT's scripts):

    DIR/masks.npy    float64 (N, H, W, 6): channels 0..4 hold the instance ids of the nuclei of
                     type Neoplastic..Epithelial, channel 5 is 1 on background pixels
    DIR/types.npy    (N,) tissue names
    DIR/export.json  what wrote it (run, checkpoint, post-processing parameters)

float64 because that is what the PanNuke download holds and what its readers expect. A nucleus
without a type (a model without a type head) is written into channel 0 so binary scores (bPQ,
Dice, AJI) still count it. Masks are streamed tile by tile; the folder is built under a
temporary name and renamed when complete, so an interrupted export leaves no half-written
predictions that look complete. Only an empty folder, or one this module wrote (it has
``export.json``), is replaced.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.data.families import BACKGROUND_CHANNEL, NUCLEUS_TYPES
from cellbench.data.npyio import NpyWriter
from cellbench.data.staging import staged_dir
from cellbench.errors import UsageError

MARKER = "export.json"
FORMAT = "cellbench-pannuke-export"


def pannuke_mask(inst: np.ndarray, type_map: np.ndarray) -> np.ndarray:
    """(H, W, 6) float64 PanNuke mask of one tile from its instance map and per-pixel type map
    (0 = background or untyped, 1..5 = NUCLEUS_TYPES)."""
    inst = np.asarray(inst)
    type_map = np.asarray(type_map)
    if inst.shape != type_map.shape or inst.ndim != 2:
        raise ValueError(f"instance map {inst.shape} and type map {type_map.shape} differ")
    mask = np.zeros((*inst.shape, len(NUCLEUS_TYPES) + 1), dtype=np.float64)
    nucleus = inst > 0
    channel = np.clip(type_map.astype(np.int64) - 1, 0, len(NUCLEUS_TYPES) - 1)
    rows, cols = np.nonzero(nucleus)
    mask[rows, cols, channel[nucleus]] = inst[nucleus]
    mask[..., BACKGROUND_CHANNEL] = ~nucleus
    return mask


def _check_out(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(
            f"{out}: folder exists, is not empty and holds no cellbench export ({MARKER}); "
            "choose another --export folder"
        )


class PannukeWriter:
    """Append tiles with ``write(inst, type_map)``; see ``pannuke_export``."""

    def __init__(self, masks: NpyWriter):
        self._masks = masks

    def write(self, inst: np.ndarray, type_map: np.ndarray) -> None:
        self._masks.write(pannuke_mask(inst, type_map)[None])


@contextlib.contextmanager
def pannuke_export(
    out: str | Path,
    tissues: Sequence[str],
    height: int,
    width: int,
    info: dict[str, Any] | None = None,
) -> Iterator[PannukeWriter]:
    """Write one fold of predictions in PanNuke's format into ``out``:

        with pannuke_export(out, tissues, 256, 256, {"run": ...}) as writer:
            for inst, type_map in tiles:
                writer.write(inst, type_map)

    Every one of the ``len(tissues)`` tiles must be written; on any error nothing replaces
    ``out``."""
    out = Path(out)
    _check_out(out)
    n = len(tissues)
    with staged_dir(out) as tmp:
        with NpyWriter(
            tmp / "masks.npy", np.float64, (n, height, width, len(NUCLEUS_TYPES) + 1)
        ) as masks:
            yield PannukeWriter(masks)
        np.save(tmp / "types.npy", np.array(list(tissues)))
        marker = {
            "format": FORMAT,
            "cellbench_version": __version__,
            "tiles": n,
            "shape": [n, height, width, len(NUCLEUS_TYPES) + 1],
            **(info or {}),
        }
        atomic_write_json(tmp / MARKER, json.loads(json.dumps(marker, default=str)))
