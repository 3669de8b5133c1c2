"""``CellbenchTUI``: the runs of a runs folder on the left, the selected run on the right.

A timer polls the run folders (``RunStoreWatcher``) about once a second; panels re-render only
when their run's watcher saw new data. Nothing here talks to a training process.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from cellbench.tui.help import HelpScreen
from cellbench.tui.watch import RunStoreWatcher
from cellbench.tui.widgets.run_view import RunView
from cellbench.tui.widgets.runs_table import RunsTable


def shown_path(path: Path) -> str:
    path = path.resolve()
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def empty_message(root: Path) -> str:
    where = shown_path(root)
    return (
        f"No runs in [b]{where}[/b] yet.\n\n"
        "Start one in another terminal (or over SSH), for example:\n\n"
        f"  [b]cellbench quickstart --runs-dir {where}[/b]\n"
        "      the whole workflow on generated data, a few minutes on a CPU\n"
        f"  [b]cellbench train --data DIR --model NAME --runs-dir {where}[/b]\n\n"
        "It appears here as soon as its run folder exists."
    )


class CellbenchTUI(App):
    CSS_PATH = "app.tcss"
    TITLE = "cellbench"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("f", "toggle_follow", "Follow running"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(
        self,
        runs_root: str | Path | None = None,
        run: str | None = None,
        interval: float = 1.0,
        follow: bool = False,
    ) -> None:
        super().__init__()
        self.watcher = RunStoreWatcher(runs_root)
        self.preselect = run
        self.interval = interval
        self.follow = follow
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(empty_message(self.watcher.root), id="empty")
        with Horizontal(id="main"):
            yield RunsTable(id="runs")
            yield RunView(id="run-view")
        yield Footer()

    def on_mount(self) -> None:
        # Keep the widgets: a query from a timer tick would search whichever screen is on top
        # (the help screen, or none while the app shuts down) and find nothing.
        self.runs_table = table = self.query_one(RunsTable)
        self.run_view = self.query_one(RunView)
        table.border_title = f"runs · {shown_path(self.watcher.root)}"
        self.poll_runs()
        found = self.watcher.store.find(self.preselect) if self.preselect is not None else None
        if found is not None:
            self.select(found.root.name)
        elif self.watcher.watchers:  # the newest run is the one most likely being watched
            self.select(self.watcher.newest_running() or list(self.watcher.watchers)[-1])
        table.focus()
        self.poll_timer = self.set_interval(self.interval, self.poll_runs)

    def on_unmount(self) -> None:
        self.poll_timer.stop()

    # ------------------------------------------------------------------ polling

    def poll_runs(self, force: bool = False) -> None:
        if not self.is_running:
            return  # a last timer tick while the app shuts down
        changes = self.watcher.poll()
        watchers = self.watcher.watchers
        self.set_class(not watchers, "-empty")
        table = self.runs_table
        table.sync(watchers, changes.changed)
        if self.follow:
            newest = self.watcher.newest_running()
            if newest is not None and newest != self.selected:
                self.select(newest)
        if self.selected not in watchers:
            self.selected = table.selected_folder
        self.show_selected(force)

    def show_selected(self, force: bool = False) -> None:
        view = self.run_view
        watcher = self.watcher.get(self.selected) if self.selected else None
        view.display = watcher is not None
        if watcher is not None:
            view.show(watcher, force=force)
            view.border_title = watcher.run.root.name

    def select(self, folder: str) -> None:
        self.selected = folder
        self.runs_table.select(folder)
        self.show_selected()

    def on_runs_table_highlighted(self, message: RunsTable.Highlighted) -> None:
        if message.folder != self.selected:
            self.selected = message.folder
            self.show_selected()

    # ------------------------------------------------------------------ actions

    def action_refresh_now(self) -> None:
        self.poll_runs(force=True)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self.notify("following the newest running run" if self.follow else "follow off")
        if self.follow:
            self.poll_runs()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
