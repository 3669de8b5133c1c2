"""Sanity-check warnings of the selected run, newest last, coloured by severity."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from cellbench.tui import format as fmt
from cellbench.tui.watch import CheckWarning, RunWatcher


def warning_line(warning: CheckWarning) -> Text:
    line = Text()
    if warning.time:
        line.append(time.strftime("%H:%M:%S ", time.localtime(warning.time)), style="dim")
    line.append(f"{warning.severity:<7} ", style=fmt.severity_style(warning.severity))
    line.append(f"{warning.check}: ", style="bold")
    line.append(warning.message)
    return line


class WarningsLog(RichLog):
    """Appends only the warnings it has not written yet; another run, a ``--fresh`` attempt or
    a new width (RichLog wraps lines once, when written) writes them all again."""

    def __init__(self, **kwargs) -> None:
        # min_width 1: RichLog renders at 78 columns at least by default, clipping narrow panels
        super().__init__(wrap=True, markup=False, highlight=False, min_width=1, **kwargs)
        self._key: tuple[str, CheckWarning | None] | None = None
        self._count = 0
        self._watcher: RunWatcher | None = None
        self._width = 0

    def on_resize(self) -> None:
        if self._watcher is not None and self.size.width != self._width:
            self._key = None
            self.show(self._watcher)

    def show(self, watcher: RunWatcher) -> None:
        self._watcher, self._width = watcher, self.size.width
        warnings = watcher.state.warnings
        key = (watcher.run.root.name, warnings[0] if warnings else None)
        if key != self._key or len(warnings) < self._count:
            self.clear()
            self._key, self._count = key, 0
            if not warnings:
                self.write(Text("no warnings", style="dim"))
        for warning in warnings[self._count :]:
            self.write(warning_line(warning))
        self._count = len(warnings)
        errors = sum(w.severity == "error" for w in warnings)
        self.border_title = f"warnings {len(warnings)}" + (f" · errors {errors}" if errors else "")
