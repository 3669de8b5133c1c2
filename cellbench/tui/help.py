"""The ``?`` screen: keys, and where the numbers come from."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]cellbench tui[/b]: runs of a runs folder, live

[b]q[/b]        quit
[b]r[/b]        read the run folders now
[b]↑ ↓ j k[/b]  select a run
[b]f[/b]        follow: keep the newest running run selected (toggle)
[b]?[/b]        this help (escape closes it)

Everything shown is read from the run folders (events.jsonl, config.yaml),
polled about once a second: only appended bytes are read, a half-written
last line waits for its newline. There is no connection to the training
process: quitting here never touches a run, and it works over SSH.

loss: faint = logged step losses (x = fractional epoch), blue = train_loss,
orange = val_loss per epoch. memory: CUDA allocator numbers when the run
had a GPU, else the training process's RSS.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP)
