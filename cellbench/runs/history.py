"""Reading a run's ``history.csv`` (the engine writes it; the CLI and the TUI read it).

The file holds numbers only (``epoch`` and float columns), so the reader is strict about each row
and tolerant about the file: a row with a wrong column count, a value that is not a number, or
bytes that are not text is skipped and counted, and the run shows as damaged; the other rows are
kept. Quotes are not special (``QUOTE_NONE``): the writer never quotes, and a stray quote in a
damaged row must not swallow the rows after it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class HistoryLog:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, problem)

    def damage(self, name: str = "history.csv") -> str | None:
        if not self.bad:
            return None
        line, problem = self.bad[0]
        if line == 0:
            return f"{name}: {problem}"
        plural = "s" if len(self.bad) > 1 else ""
        return f"{name}: {len(self.bad)} bad row{plural} skipped (line {line}: {problem})"


def _number(column: str, text: str) -> Any:
    if text == "":
        return None
    if column == "epoch":
        value = int(text)  # ValueError for anything but a plain integer
        if value < 1:
            raise ValueError(f"epoch {value} < 1")
        return value
    value = float(text)
    if math.isinf(value) and text.lower() not in ("inf", "-inf", "infinity", "-infinity"):
        raise ValueError(f"{text[:20]} is out of range")  # 1e400: a corrupt digit, not a result
    return value


def _row_problem(header: list[str], values: list[str]) -> tuple[dict[str, Any] | None, str]:
    if len(values) != len(header):
        return None, f"{len(values)} values for {len(header)} columns"
    row: dict[str, Any] = {}
    for column, text in zip(header, values, strict=True):
        try:
            row[column] = _number(column, text.strip())
        except ValueError:
            return None, f"{column}: not a number: {text[:20]!r}"
    if row.get("epoch") is None:
        return None, "no epoch"
    return row, ""


def read_history_log(path: str | Path) -> HistoryLog:
    """The usable rows of a history.csv and the skipped ones; a missing file has no rows."""
    log = HistoryLog()
    path = Path(path)
    if not path.exists():
        return log
    try:
        return _read(path, log)
    except OSError as exc:  # a folder in its place, no permission: damaged, not a traceback
        log.bad.append((0, f"cannot read ({exc.strerror or exc})"))
        return log


def _next_row(lines, log: HistoryLog) -> list[str] | None:
    """The next row, [] for a row the csv module refuses (counted), None at the end."""
    try:
        return next(lines)
    except StopIteration:
        return None
    except csv.Error as exc:  # a field over csv's size limit: a corrupt, not a real, row
        log.bad.append((lines.line_num, f"unreadable row ({exc})"))
        return []


def _read(path: Path, log: HistoryLog) -> HistoryLog:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        lines = csv.reader(fh, quoting=csv.QUOTE_NONE)
        header = _next_row(lines, log)
        if not header:
            return log
        if "epoch" not in header or len(set(header)) != len(header) or "\ufffd" in "".join(header):
            log.bad.append((1, "bad header (expected epoch and unique metric columns)"))
            return log
        while (values := _next_row(lines, log)) is not None:
            if not values:
                continue  # a blank line
            row, problem = _row_problem(header, values)
            if row is None:
                log.bad.append((lines.line_num, problem))
            else:
                log.rows.append(row)
    return log


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a history.csv as floats (``epoch`` as int); bad rows are skipped."""
    return read_history_log(path).rows
