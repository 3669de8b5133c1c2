"""The list of runs: id, name, status (coloured), epochs done, best value."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from cellbench.tui import format as fmt
from cellbench.tui.watch import RunWatcher

# (key, label, width, justify); the name takes what the others leave. Cells carry their own
# one-space gap (cell_padding 0) so a 100-column terminal still shows useful names.
COLUMNS = (
    ("id", "id", 4, "right"),
    ("name", "name", None, "left"),
    ("status", "status", 12, "left"),
    ("epochs", "ep", 7, "right"),  # "144/150" while running
    ("best", "best", 8, "right"),
)
MIN_NAME = 8


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def short_number(value) -> str:
    """At most 7 characters: 0.0324, 1.34, 1.2e-05."""
    if value is None:
        return "-"
    text = f"{float(value):.3g}"
    return text if len(text) <= 7 else f"{float(value):.2g}"


class RunsTable(DataTable):
    """Rows keyed by run folder; posts ``RunsTable.Highlighted`` when the cursor moves."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    class Highlighted(Message):
        def __init__(self, folder: str) -> None:
            self.folder = folder
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cell_padding=0, **kwargs)
        self._watchers: dict[str, RunWatcher] = {}
        self._folders: list[str] = []
        self._name_width = MIN_NAME
        self._wide = True
        self._marked: set[str] = set()

    @property
    def marked(self) -> list[str]:
        """The marked runs (space), in the table's order: the compare screen's runs."""
        return [f for f in self._folders if f in self._marked]

    def toggle_mark(self, folder: str) -> None:
        self._marked ^= {folder}
        if folder in self._folders:
            self.update_cell(folder, "name", self._name_cell(self._watchers[folder]))

    def _cell(self, key: str, value: str, style: str = "") -> Text:
        width, justify = next((w, j) for k, _, w, j in COLUMNS if k == key)
        width = width or self._name_width + 1
        if key == "epochs":  # right after the status column's own trailing spaces
            return Text(clip(value, width), style=style, justify=justify)
        return Text(" " + clip(value, width - 1), style=style, justify=justify)

    def _cells(self, watcher: RunWatcher) -> list[Text]:
        done, planned = watcher.epochs_done, watcher.epochs_planned
        epochs = f"{done}/{planned}" if planned and watcher.status == "running" else str(done)
        best = (watcher.best or {}).get("value")
        return [
            self._cell("id", str(watcher.run.id)),
            self._name_cell(watcher),
            self._status_cell(watcher),
            self._cell("epochs", epochs),
            self._cell("best", short_number(best)),
        ]

    def _name_cell(self, watcher: RunWatcher) -> Text:
        if watcher.run.root.name in self._marked:  # marked for compare
            return self._cell("name", f"● {watcher.run.name}", "bold")
        return self._cell("name", watcher.run.name)

    def _status_cell(self, watcher: RunWatcher) -> Text:
        if watcher.damaged:  # "!" in red: the header of the selected run says why
            return self._cell("status", f"{watcher.status}!", "bold red")
        return self._cell("status", watcher.status, fmt.status_style(watcher.status))

    @property
    def columns_shown(self) -> tuple:
        # a narrow panel (an 80-column terminal) drops the best column rather than the names
        return COLUMNS if self._wide else tuple(c for c in COLUMNS if c[0] != "best")

    def _rebuild(self) -> None:
        selected = self.selected_folder
        self.clear(columns=True)
        for key, label, width, justify in self.columns_shown:
            width = width or self._name_width + 1
            self.add_column(Text(" " + label, justify=justify), width=width, key=key)
        shown = [i for i, c in enumerate(COLUMNS) if c in self.columns_shown]
        for folder in self._folders:
            cells = self._cells(self._watchers[folder])
            self.add_row(*(cells[i] for i in shown), key=folder)
        if selected in self._folders:
            self.select(selected)

    def sync(self, watchers: dict[str, RunWatcher], changed: list[str]) -> None:
        """Show ``watchers`` (in their order); rebuild only when runs came or went."""
        self._watchers = watchers
        self._marked &= set(watchers)  # a removed run is no longer marked
        if list(watchers) != self._folders:
            self._folders = list(watchers)
            self._rebuild()
            return
        shown = {key for key, *_ in self.columns_shown}
        for folder in changed:
            for (key, *_), cell in zip(COLUMNS, self._cells(watchers[folder]), strict=True):
                if key in shown:
                    self.update_cell(folder, key, cell)

    def on_resize(self) -> None:
        self._fit_name()

    def _fit_name(self) -> None:
        # the region inside a vertical scrollbar, when many runs bring one
        room = self.scrollable_content_region.width
        wide = room - sum(w for _, _, w, _ in COLUMNS if w) - 1 >= MIN_NAME + 2
        fixed = sum(w for _, _, w, _ in (COLUMNS if wide else self._narrow) if w) + 1
        width = max(MIN_NAME, room - fixed)
        if width != self._name_width or wide != self._wide:
            self._name_width, self._wide = width, wide
            self._rebuild()

    _narrow = tuple(c for c in COLUMNS if c[0] != "best")

    @property
    def selected_folder(self) -> str | None:
        if not self._folders or self.row_count == 0:
            return None
        return self._folders[min(self.cursor_row, len(self._folders) - 1)]

    def select(self, folder: str) -> None:
        if folder in self._folders:
            self.move_cursor(row=self._folders.index(folder))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Highlighted(event.row_key.value))
