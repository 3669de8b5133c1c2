"""The right-hand side: every panel of the selected run, re-rendered only when it changed."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from cellbench.tui.watch import RunWatcher
from cellbench.tui.widgets.curves import LossCurves
from cellbench.tui.widgets.memory import MemoryPanel
from cellbench.tui.widgets.run_info import MetricsLine, RunHeader
from cellbench.tui.widgets.warnings import WarningsLog


class RunView(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[str, int] | None = None  # (run folder, watcher version) on screen

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield LossCurves(id="curves")
        yield MetricsLine(id="metrics")
        yield MemoryPanel(id="memory")
        yield WarningsLog(id="warnings")

    def show(self, watcher: RunWatcher, force: bool = False) -> bool:
        """Render ``watcher``; a no-op when this run at this version is already shown."""
        shown = (watcher.run.root.name, watcher.version)
        if shown == self._shown and not force:
            return False
        self._shown = shown
        self.query_one(RunHeader).show(watcher)
        self.query_one(LossCurves).show(watcher)
        self.query_one(MetricsLine).show(watcher)
        self.query_one(MemoryPanel).show(watcher)
        self.query_one(WarningsLog).show(watcher)
        return True
