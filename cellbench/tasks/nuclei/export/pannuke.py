"""Predictions written in PanNuke's format, so any PanNuke scorer reads them (``cellbench eval
pannuke --pred DIR``, PanNuke-metrics, CellViT's scripts):

    DIR/pred/masks.npy  float64 (N, H, W, 6): channels 0..4 hold the instance ids of the nuclei
                        of type Neoplastic..Epithelial, channel 5 is 1 on background pixels
    DIR/pred/types.npy  (N,) tissue names
    DIR/true/...        the ground truth of the same tiles, in the same format (``with_truth``)
    DIR/export.json     what wrote it (run, checkpoint, fold, tiles, post-processing parameters)

The ground truth travels with the predictions because a family decoder predicts only its
family's tiles of a fold: ``cellbench eval pannuke --true DIR/true --pred DIR/pred`` then pairs
tile for tile and gives the numbers of ``cellbench eval``.

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

from cellbench import __version__, strict_json
from cellbench.atomic import atomic_write_json
from cellbench.data.families import NUCLEUS_TYPES
from cellbench.data.nuclei_labels import PanNukeWriter
from cellbench.data.staging import staged_dir
from cellbench.errors import RunConflict

MARKER = "export.json"
FORMAT = "cellbench-pannuke-export"


def _check_out(out: Path) -> None:
    from cellbench.outputs import check_location

    check_location(out / MARKER, "--export")  # never inside a store or a run's own files
    if not out.exists():
        return
    if not out.is_dir():
        raise RunConflict(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise RunConflict(
            f"{out}: folder exists, is not empty and holds no cellbench export ({MARKER}); "
            "choose another --export folder"
        )
    if (out / MARKER).is_file():
        _check_only_ours(out)


# what an export holds; replacing the folder must not take a user's file with it
_WRITTEN = {MARKER: None, "pred": {"masks.npy", "types.npy"}, "true": {"masks.npy", "types.npy"}}


def _check_only_ours(out: Path) -> None:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise RunConflict(
            f"{out / MARKER}: not a cellbench export marker; choose another --export folder"
        )
    for child in out.iterdir():
        files = _WRITTEN.get(child.name, ())
        inside = set(p.name for p in child.iterdir()) if files and child.is_dir() else None
        if child.name not in _WRITTEN or (files and (inside is None or inside - files)):
            foreign = child if inside is None else child / sorted(inside - files)[0]
            raise RunConflict(
                f"{foreign}: not written by a cellbench export; replacing {out} would delete "
                "it (move it, or choose another --export folder)"
            )


class PannukeTiles:
    """Append tiles one at a time with ``write(...)``; see ``pannuke_export``."""

    def __init__(self, pred: PanNukeWriter, true: PanNukeWriter | None):
        self._pred, self._true = pred, true

    def write(
        self,
        inst: np.ndarray,
        type_map: np.ndarray,
        true_inst: np.ndarray | None = None,
        true_types: np.ndarray | None = None,
    ) -> None:
        """One tile's instance map and per-pixel type map (0 = background, 1..5 = types), and
        its ground truth when the export carries it."""
        self._pred.write(np.asarray(inst)[None], np.asarray(type_map)[None])
        if self._true is not None:
            if true_inst is None or true_types is None:
                raise ValueError("this export carries the ground truth: give true_inst/types")
            self._true.write(np.asarray(true_inst)[None], np.asarray(true_types)[None])


@contextlib.contextmanager
def pannuke_export(
    out: str | Path,
    tissues: Sequence[str],
    height: int,
    width: int,
    info: dict[str, Any] | None = None,
    with_truth: bool = False,
) -> Iterator[PannukeTiles]:
    """Write one fold of predictions in PanNuke's format into ``out``:

        with pannuke_export(out, tissues, 256, 256, {"run": ...}, with_truth=True) as writer:
            for inst, type_map, true_inst, true_types in tiles:
                writer.write(inst, type_map, true_inst, true_types)

    Every one of the ``len(tissues)`` tiles must be written; on any error nothing replaces
    ``out``."""
    out = Path(out)
    _check_out(out)
    n = len(tissues)
    with staged_dir(out) as tmp:
        shape = (n, height, width)
        with contextlib.ExitStack() as stack:
            pred = stack.enter_context(PanNukeWriter(tmp / "pred", list(tissues), shape))
            true = (
                stack.enter_context(PanNukeWriter(tmp / "true", list(tissues), shape))
                if with_truth
                else None
            )
            yield PannukeTiles(pred, true)
        marker = {
            "format": FORMAT,
            "cellbench_version": __version__,
            "tiles": n,
            "layout": {"pred": "pred/", **({"true": "true/"} if with_truth else {})},
            "shape": [n, height, width, len(NUCLEUS_TYPES) + 1],
            **(info or {}),
        }
        atomic_write_json(tmp / MARKER, json.loads(strict_json.dumps(marker)))
