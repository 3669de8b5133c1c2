"""The ``?`` screen: keys, and where the numbers come from."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]cellbench tui[/b]: runs of a runs folder, live

[b]↑ ↓ j k[/b] select a run       [b]f[/b] follow the newest running run
[b]space[/b]   mark it (compare)  [b]r[/b] read the run folders now
[b]s[/b]       stop it: asks, then it checkpoints and ends interrupted
[b]y[/b]       copy its resume (or retrain) command
[b]m[/b]       pick the curve: loss, loss terms, metrics, lr
[b][ ][/b]     previous / next curve    [b]l[/b] log scale
[b]c[/b]       compare the marked runs (one metric, config differences)
[b]w[/b]       sweeps: leaderboard, trial states, phases (enter opens a run)
[b]g[/b]       GPUs: NVML readings of every visible GPU
[b]?[/b]       this help    [b]escape[/b] back    [b]q[/b] quit

Curves: faint = step losses, x = the monitored metric's best epoch.
Files are read in a background thread, only their new bytes; the stop
key's signal (after you confirm) is all that is ever sent to a run.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP)
