"""Predictions written in PanNuke's format, so any PanNuke scorer reads them (``cellbench eval
pannuke --pred DIR``, PanNuke-metrics, CellViT's scripts):

    DIR/masks.npy    float64 (N, H, W, 6): channels 0..4 hold the instance ids of the nuclei of
                     type Neoplastic..Epithelial, channel 5 is 1 on background pixels
    DIR/types.npy    (N,) tissue names
    DIR/export.json  what wrote it (run, checkpoint, post-processing parameters)

The masks are encoded by ``cellbench.data.nuclei_labels.PanNukeWriter`` (the writer ``eval
pannuke``'s tests use), streamed tile by tile. This module adds what an export into a user's
folder needs: the whole folder is built under a temporary name and renamed when complete, so an
interrupted export leaves no half-written predictions that look complete, and only an empty
folder, or one this module wrote (it has ``export.json``), is replaced.
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
from cellbench.data.families import NUCLEUS_TYPES
from cellbench.data.nuclei_labels import PanNukeWriter
from cellbench.data.staging import staged_dir
from cellbench.errors import UsageError

MARKER = "export.json"
FORMAT = "cellbench-pannuke-export"


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


class PannukeTiles:
    """Append tiles one at a time with ``write(inst, type_map)``; see ``pannuke_export``."""

    def __init__(self, writer: PanNukeWriter):
        self._writer = writer

    def write(self, inst: np.ndarray, type_map: np.ndarray) -> None:
        """One tile's instance map and per-pixel type map (0 = background, 1..5 = types)."""
        self._writer.write(np.asarray(inst)[None], np.asarray(type_map)[None])


@contextlib.contextmanager
def pannuke_export(
    out: str | Path,
    tissues: Sequence[str],
    height: int,
    width: int,
    info: dict[str, Any] | None = None,
) -> Iterator[PannukeTiles]:
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
        with PanNukeWriter(tmp, list(tissues), (n, height, width)) as writer:
            yield PannukeTiles(writer)
        marker = {
            "format": FORMAT,
            "cellbench_version": __version__,
            "tiles": n,
            "shape": [n, height, width, len(NUCLEUS_TYPES) + 1],
            **(info or {}),
        }
        atomic_write_json(tmp / MARKER, json.loads(json.dumps(marker, default=str)))
