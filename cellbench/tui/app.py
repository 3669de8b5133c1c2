"""``CellbenchTUI``: the runs of a runs folder on the left, the selected run on the right.

A timer starts a read of the run folders (``RunStoreWatcher``) about once a second in a worker
thread, so the screen never waits on a file; a big ``events.jsonl`` is read in chunks of
``READ_CHUNK`` bytes, the screen updated after each. Panels re-render only when their run's
watcher saw new data. The only thing sent to a training is the stop key's signal (``s``, after
a confirmation). Other views are screens pushed on top (compare, sweeps, GPUs, help): a new view
(workflows...) is one more screen module and one more binding.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from cellbench.errors import RunConflict
from cellbench.runs.stop import NotRunning, request_stop, running_holder
from cellbench.tui.compare import CompareScreen
from cellbench.tui.dialogs import ConfirmScreen, PickScreen
from cellbench.tui.gpus import GpuScreen
from cellbench.tui.help import HelpScreen
from cellbench.tui.sweeps import SweepScreen, sweep_names
from cellbench.tui.watch import RunStoreWatcher, RunWatcher, StoreChanges
from cellbench.tui.widgets.curves import MetricCurves
from cellbench.tui.widgets.run_view import RunView
from cellbench.tui.widgets.runs_table import RunsTable


def shown_path(path: Path) -> str:
    """Short: relative to this folder when inside it, else from ~, else absolute."""
    path = path.resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
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


READ_CHUNK = 8 << 20  # bytes of one events.jsonl read before the screen is updated


class CellbenchTUI(App):
    CSS_PATH = "app.tcss"
    TITLE = "cellbench"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("m", "pick_metric", "Curve"),
        Binding("l", "toggle_log", "Log"),
        Binding("s", "stop", "Stop"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("g", "gpus", "GPUs"),
        Binding("w", "sweeps", "Sweeps"),
        Binding("right_square_bracket", "step_metric(1)", "Next metric", show=False),
        Binding("left_square_bracket", "step_metric(-1)", "Previous metric", show=False),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("f", "toggle_follow", "Follow running", show=False),
        Binding("y", "copy_resume", "Copy resume command", show=False),
    ]

    def __init__(
        self,
        runs_root: str | Path | None = None,
        run: str | None = None,
        interval: float = 1.0,
        follow: bool = False,
        sweep: str | None = None,
        sweeps_root: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.watcher = RunStoreWatcher(runs_root)
        self.sweep = sweep
        self.sweeps_root = Path(sweeps_root) if sweeps_root else None
        self.preselect = run
        self.interval = interval
        self.follow = follow
        self.selected: str | None = None
        self.polling = False  # a read is under way in the worker thread
        self._poll_lock = threading.Lock()
        self._again = False
        self._force = False
        self._placed = False  # the first read chose the run to show

    # keys that act on the selected run of the runs view: off (and out of the footer) while
    # another view is on top
    RUN_ACTIONS = frozenset(
        {"pick_metric", "toggle_log", "stop", "mark", "compare", "step_metric", "copy_resume"}
    )

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return not (action in self.RUN_ACTIONS and len(self.screen_stack) > 1)

    def compose(self) -> ComposeResult:
        yield Static(empty_message(self.watcher.root), id="empty")
        with Horizontal(id="main"):
            yield RunsTable(id="runs")
            yield RunView(id="run-view")
        yield Footer(show_command_palette=False)  # ctrl+p still opens it

    def on_mount(self) -> None:
        # Keep the widgets: a query from a timer tick would search whichever screen is on top
        # (the help screen, or none while the app shuts down) and find nothing.
        self.runs_table = table = self.query_one(RunsTable)
        self.run_view = self.query_one(RunView)
        self.curves = self.query_one(MetricCurves)
        table.border_title = f"runs · {shown_path(self.watcher.root)}"
        self.set_class(True, "-loading")
        table.focus()
        self.poll_runs()  # in the worker: the first paint does not wait for the files
        self.poll_timer = self.set_interval(self.interval, self.poll_runs)
        if self.sweep:
            self.push_screen(SweepScreen(self.sweeps_dir / self.sweep))

    @property
    def sweeps_dir(self) -> Path:
        from cellbench.sweep.store import default_sweeps_root

        return self.sweeps_root or default_sweeps_root(self.watcher.root)

    def on_unmount(self) -> None:
        self.poll_timer.stop()

    def on_resize(self) -> None:
        # panels collapse on small terminals (80x24): see app.tcss
        self.set_class(self.size.width < 110, "-narrow")
        self.set_class(self.size.height < 34, "-short")

    # ------------------------------------------------------------------ polling

    def poll_runs(self, force: bool = False) -> None:
        if not self.is_running:
            return  # a last timer tick while the app shuts down
        with self._poll_lock:
            self._force |= force
            self._again = True  # a read under way reads once more before it ends
            if self.polling:
                return  # never two readers at once
            self.polling = True
        self.run_worker(self._read_runs, thread=True, group="poll", name="read run folders")

    def _read_runs(self) -> None:
        """In the worker thread: read, hand the changes to the UI thread; again while a big
        file has unread bytes or a read was asked for meanwhile."""
        while True:
            with self._poll_lock:
                if not (self._again or self.watcher.behind):
                    self.polling = False
                    return
                self._again = False
            changes = self.watcher.poll(READ_CHUNK)
            try:
                self.call_from_thread(self._show_changes, changes)
            except RuntimeError:  # the app is closing
                with self._poll_lock:
                    self.polling = False
                return

    def _show_changes(self, changes: StoreChanges) -> None:
        if not self.is_running:
            return
        watchers = self.watcher.watchers
        self.set_class(False, "-loading")
        self.set_class(not watchers, "-empty")
        table = self.runs_table
        table.sync(watchers, changes.changed)
        if not self._placed and watchers:
            self._placed = True
            found = self.watcher.store.find(self.preselect) if self.preselect else None
            if found is not None and found.root.name in watchers:
                self.select(found.root.name)
            else:  # the newest run is the one most likely being watched
                self.select(self.watcher.newest_running() or list(watchers)[-1])
        if self.follow:
            newest = self.watcher.newest_running()
            if newest is not None and newest != self.selected:
                self.select(newest)
        if self.selected not in watchers:
            self.selected = table.selected_folder
        force, self._force = self._force, False
        self.show_selected(force)

    @property
    def current(self) -> RunWatcher | None:
        return self.watcher.get(self.selected) if self.selected else None

    def show_selected(self, force: bool = False) -> None:
        view = self.run_view
        watcher = self.current
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

    def _redraw_curves(self) -> None:
        if self.current is not None:
            self.curves.show(self.current)

    def action_pick_metric(self) -> None:
        watcher = self.current
        if watcher is None:
            return

        def picked(name: str | None) -> None:
            if name:
                self.curves.choice = name
                self._redraw_curves()

        names = watcher.curve_names()
        self.push_screen(PickScreen("curve to show", names, self.curves.choice), picked)

    def action_step_metric(self, delta: int) -> None:
        watcher = self.current
        if watcher is None:
            return
        names = watcher.curve_names()
        index = names.index(self.curves.choice) if self.curves.choice in names else 0
        self.curves.choice = names[(index + delta) % len(names)]
        self._redraw_curves()

    def action_toggle_log(self) -> None:
        self.curves.log_scale = not self.curves.log_scale
        self._redraw_curves()

    def action_mark(self) -> None:
        if self.selected:
            self.runs_table.toggle_mark(self.selected)

    def action_compare(self) -> None:
        marked = self.runs_table.marked
        if len(marked) < 2:
            self.notify("mark two or more runs first (space on each)", severity="warning")
            return
        self.push_screen(CompareScreen(marked))

    def action_gpus(self) -> None:
        self.push_screen(GpuScreen())

    def action_sweeps(self) -> None:
        names = sweep_names(self.sweeps_dir)
        if not names:
            self.notify(f"no sweep in {shown_path(self.sweeps_dir)}", severity="warning")
            return

        def picked(name: str | None) -> None:
            if name:
                self.push_screen(SweepScreen(self.sweeps_dir / name))

        self.push_screen(PickScreen("sweep to show", names, self.sweep), picked)

    def open_run(self, folder: str) -> None:
        """Select ``folder`` in the runs view (a sweep's trial), once the runs are read."""
        if folder in self.watcher.watchers:
            self.follow = False
            self.select(folder)
        else:
            self.notify(f"{folder}: not in {shown_path(self.watcher.root)}", severity="warning")

    def action_stop(self) -> None:
        watcher = self.current
        if watcher is None:
            return
        run = watcher.run
        try:
            holder = running_holder(run)
        except (NotRunning, RunConflict) as exc:
            self.notify(str(exc), severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                sent = request_stop(run)
            except (NotRunning, RunConflict) as exc:
                self.notify(str(exc), severity="warning")
                return
            self.notify(
                f"{run.root.name}: {sent.signal_name} sent to pid {sent.pid}; it stops after "
                "the current step and ends interrupted"
            )

        question = (
            f"Stop [b]{run.root.name}[/b]?\n\n{holder.signal_name} to pid {holder.pid} on "
            f"{holder.host}: it finishes its step, keeps its last completed epoch in last.pt "
            "and ends interrupted; resume it later with train --resume."
        )
        self.push_screen(ConfirmScreen(question, yes="Stop"), answered)

    def action_copy_resume(self) -> None:
        watcher = self.current
        if watcher is None:
            return
        from cellbench.runs.stop import resume_commands

        commands = resume_commands(watcher.run)
        command = commands.get("resume") or commands["retrain"]
        self.copy_to_clipboard(command)
        self.notify(f"copied: {command}")
