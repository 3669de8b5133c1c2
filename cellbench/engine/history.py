"""``history.csv``: one row per completed epoch, rewritten atomically after every epoch.

Columns: ``epoch``, ``train_loss``, ``val_loss``, the task's validation metrics (``val_<name>``),
``lr``. Only numbers that are a pure function of the config go in (no wall times), so two runs
of the same config on CPU, or a run and its resumed twin, give byte-identical files. Floats are
written with ``repr`` (shortest exact round-trip); an undefined value (NaN, inf) is a blank cell.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from cellbench.atomic import atomic_write_text
from cellbench.runs.history import read_history

__all__ = ["History", "read_history"]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # an undefined metric (NaN, e.g. a val fold without nuclei) is a blank cell, never "nan"
        return repr(value) if math.isfinite(value) else ""
    return str(value)


class History:
    def __init__(self, path: str | Path, rows: list[dict[str, Any]] | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        columns = self.columns()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow([_format(row.get(c)) for c in columns])
        return buffer.getvalue()

    def write(self) -> Path:
        return atomic_write_text(self.path, self.to_csv())

    def column(self, name: str) -> list[float]:
        return [float(r[name]) for r in self.rows if r.get(name) is not None]
