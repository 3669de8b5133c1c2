"""Reading a run's ``history.csv`` (the engine writes it; the CLI and the TUI read it)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a history.csv as floats (``epoch`` as int); a missing file has no rows."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in ("", None):
                    row[key] = None
                elif key == "epoch":
                    row[key] = int(value)
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows
