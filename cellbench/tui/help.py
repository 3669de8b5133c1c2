"""The ``?`` screen: keys, and where the numbers come from."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]cellbench tui[/b]: runs of a runs folder, live

[b]runs[/b]
[b]↑ ↓ j k[/b]  select a run            [b]f[/b]  follow the newest running run
[b]space[/b]    mark a run (compare)    [b]r[/b]  read the run folders now
[b]s[/b]        stop the selected run (asks first; it checkpoints, ends interrupted)
[b]y[/b]        copy its resume (or retrain) command

[b]curves[/b]
[b]m[/b]        pick the curve: loss, each loss term, each metric, lr
[b][ ][/b]      previous / next curve   [b]l[/b]  log scale (toggle)
         the monitored metric's best epoch is marked x

[b]views[/b]
[b]c[/b]        compare the marked runs: one metric overlaid, config differences
[b]g[/b]        GPUs: NVML readings of every visible GPU
[b]?[/b]        this help           [b]escape[/b] back    [b]q[/b] quit

Everything is read from the run folders (events.jsonl, config.yaml) in a
background thread, about once a second: only appended bytes are read. The
only thing sent to a training is the stop key's signal, after you confirm.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP)
