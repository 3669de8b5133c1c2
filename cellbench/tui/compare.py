"""The compare screen: one metric of two or more marked runs on one plot, and the config keys in
which the runs differ (seeds/002 compared runs by pasting TensorBoard screenshots side by side)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from cellbench.dotted import flatten
from cellbench.tui.dialogs import PickScreen
from cellbench.tui.watch import RunWatcher
from cellbench.tui.widgets.curves import draw_series, finish_axes

MISSING = "-"


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """``{dotted key: [value per run]}`` for every key whose value is not the same in all runs
    (a key one run lacks counts as different)."""
    flat = [flatten(c) for c in configs]
    keys: dict[str, None] = {}
    for f in flat:
        keys.update(dict.fromkeys(f))
    diff = {}
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diff[key] = values
    return diff


def comparable_columns(watchers: list[RunWatcher]) -> list[str]:
    """Every per-epoch column any of the runs logged: losses, loss terms, metrics, lr."""
    names: dict[str, None] = {"val_loss": None, "train_loss": None}
    for watcher in watchers:
        for row in watcher.state.epochs:
            names.update(dict.fromkeys(row.metrics))
        if any(row.lr is not None for row in watcher.state.epochs):
            names["lr"] = None
    return list(names)


class CompareScreen(Screen):
    """Reads the app's watchers (they keep polling); ``escape`` goes back to the runs."""

    BINDINGS = [
        Binding("escape,c", "app.pop_screen", "Back"),
        Binding("m", "pick", "Metric"),
        Binding("right_square_bracket", "step(1)", "Next", key_display="]", show=False),
        Binding("left_square_bracket", "step(-1)", "Prev", key_display="[", show=False),
        Binding("l", "toggle_log", "Log scale"),
    ]

    def __init__(self, folders: list[str]) -> None:
        super().__init__()
        self.folders = folders
        self.metric: str | None = None
        self.log_scale = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="compare"):
            yield PlotextPlot(id="compare-plot")
            yield Static(id="compare-diff")
        yield Footer(show_command_palette=False)  # ctrl+p still opens it

    @property
    def watchers(self) -> list[RunWatcher]:
        found = [self.app.watcher.get(f) for f in self.folders]
        return [w for w in found if w is not None]

    def on_mount(self) -> None:
        watchers = self.watchers
        self.metric = next((w.monitored for w in watchers if w.monitored), "val_loss")
        self.refresh_view()
        self.set_interval(1.0, self.refresh_view)  # the runs may still be training

    def refresh_view(self) -> None:
        watchers = self.watchers
        self.draw(watchers)
        self.query_one("#compare-diff", Static).update(self.diff_table(watchers))

    def draw(self, watchers: list[RunWatcher]) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("epoch")
        series = [(w.run.root.name, *w.epoch_curve(self.metric)) for w in watchers]
        xmax = draw_series(plt, series, self.log_scale)
        finish_axes(plt, xmax, self.log_scale)
        plt.title(f"{self.metric} · {len(watchers)} runs" + (" · log" if self.log_scale else ""))
        plot.refresh()

    def diff_table(self, watchers: list[RunWatcher]) -> Table:
        diff = config_differences([w.config for w in watchers])
        table = Table(title="config keys that differ", show_edge=False, pad_edge=False)
        table.add_column("key", overflow="fold")
        for w in watchers:
            table.add_column(str(w.run.id), overflow="fold")
        for key, values in diff.items():
            table.add_row(key, *(str(v) for v in values))
        if not diff:
            table.add_row("(none: same config)", *([""] * len(watchers)))
        return table

    def action_pick(self) -> None:
        def picked(name: str | None) -> None:
            if name:
                self.metric = name
                self.refresh_view()

        columns = comparable_columns(self.watchers)
        self.app.push_screen(PickScreen("metric to compare", columns, self.metric), picked)

    def action_step(self, delta: int) -> None:
        columns = comparable_columns(self.watchers)
        index = columns.index(self.metric) if self.metric in columns else 0
        self.metric = columns[(index + delta) % len(columns)]
        self.refresh_view()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.refresh_view()
