"""Per-tile scores as rows and CSV, for finding the tiles that pull a score down."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cellbench.atomic import atomic_write_text
from cellbench.data.families import NUCLEUS_TYPES
from cellbench.metrics.nuclei import TileScores
from cellbench.metrics.nuclei_folds import FoldScores
from cellbench.strict_json import csv_cell

COLUMNS = (
    "fold tile tissue true_nuclei pred_nuclei bPQ mPQ "
    + " ".join(f"PQ_{name}" for name in NUCLEUS_TYPES)
    + " dice aji aji_plus"
).split()


def _value(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _ratio(pair: tuple[int, int]) -> float | None:
    return round(pair[0] / pair[1], 6) if pair[1] > 0 else None


def tile_rows(folds: dict[int | None, FoldScores]) -> list[dict[str, Any]]:
    """One dict per tile of every fold; None where a score is not defined."""
    rows = []
    for key, fold in folds.items():
        rows += fold_tile_rows(key, fold.tiles, fold.true.tissues)
    return rows


def fold_tile_rows(
    key: int | None, tiles: Sequence[TileScores], tissues: Sequence[str]
) -> list[dict[str, Any]]:
    """One dict per tile of one fold (``key``), its tiles' scores and tissues in order."""
    rows = []
    for i, (scores, tissue) in enumerate(zip(tiles, tissues, strict=True)):
        pq = scores.pq_values()
        row = {
            "fold": key,
            "tile": i,
            "tissue": tissue,
            "true_nuclei": scores.n_true,
            "pred_nuclei": scores.n_pred,
            "bPQ": _value(pq[0]),
            "mPQ": _value(scores.mpq()),
        }
        row.update({f"PQ_{name}": _value(pq[t]) for t, name in enumerate(NUCLEUS_TYPES, 1)})
        row.update(
            dice=_ratio(scores.dice), aji=_ratio(scores.aji), aji_plus=_ratio(scores.aji_plus)
        )
        rows.append(row)
    return rows


def write_tile_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The rows as CSV (empty cell = not scored), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})  # NaN: blank
    return atomic_write_text(path, buffer.getvalue())
