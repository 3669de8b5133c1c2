"""The right-hand side: every panel of the selected run, re-rendered only when it changed."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from cellbench.tui.watch import RunWatcher
from cellbench.tui.widgets.curves import MetricCurves
from cellbench.tui.widgets.memory import MemoryPanel
from cellbench.tui.widgets.run_info import MetricsLine, RunHeader
from cellbench.tui.widgets.warnings import WarningsLog


class RunView(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[str, int] | None = None  # (run folder, watcher version) on screen

    def compose(self) -> ComposeResult:
        # kept as a tuple: no DOM query on every refresh, and none that can miss while the app
        # shuts down and removes the children first
        self.panels = (
            RunHeader(id="run-header"),
            MetricCurves(id="curves"),
            MetricsLine(id="metrics"),
            MemoryPanel(id="memory"),
            WarningsLog(id="warnings"),
        )
        yield from self.panels

    def show(self, watcher: RunWatcher, force: bool = False) -> bool:
        """Render ``watcher``; a no-op when this run at this version is already shown."""
        shown = (watcher.run.root.name, watcher.version)
        if shown == self._shown and not force:
            return False
        self._shown = shown
        for panel in self.panels:
            panel.show(watcher)
        return True
