"""Text panels of the selected run: its header (what and where) and its latest numbers."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from cellbench.runs.stop import resume_commands
from cellbench.tui import format as fmt
from cellbench.tui.watch import RunWatcher


class RunHeader(Static):
    """Run folder, model, device, parameters, status; the end reason or the reset on line 2."""

    def show(self, watcher: RunWatcher) -> None:
        start = watcher.state.start or {}
        # the run folder is the panel's title; status first, it is what changes
        line = Text()
        line.append(watcher.status, style=fmt.status_style(watcher.status))
        planned = watcher.epochs_planned
        line.append(f" · epoch {watcher.epochs_done}" + (f"/{planned}" if planned else ""))
        line.append(f" · {watcher.model or 'model ?'}")
        if start.get("device"):
            line.append(f" · {start['device']}")
        if start.get("params") is not None:
            line.append(f" · {fmt.count(start['params'])} params")
        line.append("\n")
        line.append(self._detail(watcher), style="dim")
        for reason in watcher.damaged:
            line.append(f"\ndamaged: {reason}", style="bold red")
        if watcher.behind:
            line.append(f"\nreading events.jsonl: {watcher.loaded:.0%}", style="bold yellow")
        if watcher.status in ("interrupted", "crashed", "failed"):
            # the exact commands, to copy (key y copies the first)
            for what, command in resume_commands(watcher.run).items():
                line.append(f"\n{what}: ", style="bold")
                line.append(command)
        self.update(line)

    @staticmethod
    def _detail(watcher: RunWatcher) -> str:
        start, end = watcher.state.start or {}, watcher.state.end
        if end is not None:
            return f"{end.get('status', '?')}: {end.get('reason') or '-'}"
        if watcher.status == "created":
            return "not started: no run_start event yet"
        if watcher.status == "crashed":
            return "no run_end and no live writer: the process died"
        parts = []
        if start.get("resumed"):
            parts.append(f"resumed after epoch {start.get('start_epoch', '?')}")
        reset = start.get("reset")
        if reset:
            parts.append(
                f"--fresh: removed {len(reset.get('removed') or [])} files "
                f"({fmt.size(reset.get('bytes'))})"
            )
        if start.get("init_from"):
            parts.append(f"init from {start['init_from']}")
        if start.get("amp"):
            parts.append(f"amp {start['amp']}")
        return " · ".join(parts) or "training"


class MetricsLine(Static):
    """The last epoch's numbers, the best so far, and the last evaluation."""

    def show(self, watcher: RunWatcher) -> None:
        state = watcher.state
        text = Text()
        if state.epochs:
            row = state.epochs[-1]
            text.append(f"epoch {row.epoch}: ", style="bold")
            values = {"train_loss": row.train_loss, "val_loss": row.val_loss, **row.metrics}
            text.append(" · ".join(f"{k} {fmt.number(v)}" for k, v in values.items()))
            text.append(f" · lr {fmt.number(row.lr)}")
        else:
            text.append("no epoch finished yet", style="dim")
        text.append("\nbest ", style="bold")
        text.append(fmt.best(watcher.best))
        if state.evals:
            last = state.evals[-1]
            metrics = last.get("metrics") or {}
            shown = " · ".join(f"{k} {fmt.number(v)}" for k, v in list(metrics.items())[:4])
            text.append(f"\neval {last.get('split', '?')} ({last.get('checkpoint', '?')}) ", "bold")
            text.append(shown)
        self.update(text)
