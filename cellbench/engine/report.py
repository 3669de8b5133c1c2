"""What the engine tells a person while it runs: a Rich progress bar and one line per epoch/check.

The engine calls a ``Reporter``; the base class is silent (library use, tests) and
``RichReporter`` draws on a stderr console. The bar is only drawn on a terminal and not with
``--json``; the per-epoch and check lines are always printed (they are the log of a non-TTY run).
The loss/lr/samples-per-second shown on the bar are refreshed at the engine's sync points
(every ``train.log_every`` steps), never by forcing a device sync of their own.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}


class Reporter:
    """Silent reporter; subclasses draw."""

    def run_start(self, info: dict[str, Any]) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.begin(f"epoch {epoch}/{epochs}", steps)

    def begin(self, description: str, total: int) -> None:
        """A new progress bar of ``total`` steps."""

    def advance(self, n: int = 1) -> None: ...

    def step_stats(self, loss: float, lr: float, samples_per_s: float) -> None: ...

    def epoch_end(self, row: dict[str, Any], best: dict[str, Any], time_s: float) -> None: ...

    def warning(self, check: str, severity: str, message: str) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None, show_progress: bool | None = None):
        self.console = console or Console(stderr=True)
        if show_progress is None:
            show_progress = self.console.is_terminal
        self.show_progress = show_progress
        self._progress: Progress | None = None
        self._task = None
        self._stats = ""

    def _ensure_progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self._progress

    def run_start(self, info: dict[str, Any]) -> None:
        parts = [f"{k} {_fmt(v)}" for k, v in info.items() if v is not None]
        self.console.print("[bold]train[/] " + escape(" · ".join(parts)), highlight=False)

    def begin(self, description: str, total: int) -> None:
        if not self.show_progress:
            return
        progress = self._ensure_progress()
        if self._task is not None:
            progress.remove_task(self._task)
        self._task = progress.add_task(description, total=total, stats=self._stats)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def step_stats(self, loss: float, lr: float, samples_per_s: float) -> None:
        self._stats = f"loss {loss:.4f} · lr {lr:.3g} · {samples_per_s:,.0f} samples/s"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, stats=self._stats)

    def epoch_end(self, row: dict[str, Any], best: dict[str, Any], time_s: float) -> None:
        # the loss terms (train_loss_<term>, val_loss_<term>) stay in history.csv: one line each
        shown = {k: v for k, v in row.items() if k != "epoch" and "_loss_" not in k}
        fields = " · ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        marker = " [green]*best*[/]" if best.get("epoch") == row["epoch"] else ""
        self.console.print(
            escape(f"epoch {row['epoch']}: {fields} · {time_s:.1f}s") + marker, highlight=False
        )

    def warning(self, check: str, severity: str, message: str) -> None:
        style = SEVERITY_STYLE.get(severity, "yellow")
        self.console.print(
            f"[{style}]{escape(severity)}[/] [bold]{escape(check)}[/]: {escape(message)}",
            highlight=False,
        )

    def message(self, text: str) -> None:
        # engine messages are plain text that may quote paths or library errors with brackets
        self.console.print(escape(text), highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
