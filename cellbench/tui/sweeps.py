"""The sweep view: a sweep's leaderboard (mean ± std over seeds), trial states and phase progress,
live; enter on a trial opens its run in the runs view.

It reads the files the sweep itself keeps up to date (``cellbench.sweep.store``): ``state.json``
(each trial's status, rewritten at every start and end) and ``leaderboard.json`` (ranked by
``cellbench.sweep.leaderboard`` after every trial), in a worker thread every 2 s. No ranking is
recomputed here: the TUI shows the ranking ``sweep show`` prints.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from cellbench.tui import format as fmt

TRIAL_STYLES = {
    "completed": "green",
    "running": "bold cyan",
    "failed": "bold red",
    "interrupted": "yellow",
    "pruned": "yellow",
    "pending": "dim",
    "skipped": "dim",
}


def sweep_names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or replaced right now: next read
        return {}


def read_sweep(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state.json, leaderboard.json) of a sweep folder; {} for a file not there yet."""
    return _read(folder / "state.json"), _read(folder / "leaderboard.json")


def progress_line(state: dict[str, Any]) -> Text:
    trials = state.get("trials") or {}
    counts = Counter(t.get("status", "pending") for t in trials.values())
    line = Text()
    line.append(f"{state.get('status', '?')}", style=fmt.status_style(state.get("status", "")))
    done = sum(counts[s] for s in ("completed", "failed", "pruned"))
    line.append(f" · {done}/{len(trials)} trials finished")
    for status in ("running", "completed", "failed", "interrupted", "pruned", "pending"):
        if counts[status]:
            line.append(f" · {counts[status]} {status}", style=TRIAL_STYLES.get(status, ""))
    phases = state.get("phases") or {}
    if phases:
        line.append("\nphases: ")
        line.append(" → ".join(f"{name} {status}" for name, status in phases.items()))
    return line


def board_rows(state: dict[str, Any], board: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard's rows with each trial's live status from state.json (a trial that started
    after the last leaderboard write shows ``running``)."""
    live = state.get("trials") or {}
    rows = []
    for row in board.get("rows") or []:
        status = (live.get(row["trial"]) or {}).get("status") or row.get("status")
        rows.append({**row, "status": status})
    listed = {r["trial"] for r in rows}
    for trial, entry in live.items():
        if trial not in listed:
            rows.append({"trial": trial, "run": entry.get("run"), "status": entry.get("status"),
                         "config": "", "rank": None})  # fmt: skip
    return rows


def _spread(row: dict[str, Any]) -> str:
    if row.get("mean") is None:
        return "-"
    std = f" ± {row['std']:.2g}" if row.get("std") is not None else ""
    return f"{row['mean']:.4g}{std} ({row.get('n', 1)})"


class SweepScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "open_run", "Open run"),
    ]

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.rows: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static(id="sweep-progress")
        yield DataTable(id="sweep-board", cursor_type="row", zebra_stripes=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#sweep-progress", Static).border_title = f"sweep {self.folder.name}"
        table = self.query_one(DataTable)
        for column in ("rank", "trial", "run", "config", "status", "best", "mean ± std (n)"):
            table.add_column(column, key=column)
        table.focus()
        self.read()
        self.set_interval(2.0, self.read)

    def read(self) -> None:
        self.run_worker(self._read, thread=True, exclusive=True, group="sweep")

    def _read(self) -> None:
        state, board = read_sweep(self.folder)
        with contextlib.suppress(RuntimeError):  # the app is closing
            self.app.call_from_thread(self.show, state, board)

    def show(self, state: dict[str, Any], board: dict[str, Any]) -> None:
        if not self.is_attached:
            return
        metric = board.get("metric") or "best"
        progress = progress_line(state) if state else Text("no state.json yet", style="dim")
        panel = self.query_one("#sweep-progress", Static)
        panel.update(progress)
        direction = {"min": " (lower is better)", "max": " (higher is better)"}
        panel.border_title = (
            f"sweep {self.folder.name} · {metric}{direction.get(board.get('mode'), '')}"
        )
        table = self.query_one(DataTable)
        rows = board_rows(state, board)
        cursor = table.cursor_row
        table.clear()
        for row in rows:
            status = row.get("status") or "pending"
            value = row.get("value")
            table.add_row(
                str(row.get("rank") or "-"),
                row["trial"],
                row.get("run") or "-",
                row.get("config") or "",
                Text(status, style=TRIAL_STYLES.get(status, "")),
                "-" if value is None else f"{value:.4g}",
                _spread(row),
                key=row["trial"],
            )
        self.rows = rows
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))

    def action_open_run(self) -> None:
        table = self.query_one(DataTable)
        if not self.rows:
            return
        run = self.rows[min(table.cursor_row, len(self.rows) - 1)].get("run")
        if not run:
            self.notify("this trial has no run yet", severity="warning")
            return
        self.app.pop_screen()
        self.app.open_run(run)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()
