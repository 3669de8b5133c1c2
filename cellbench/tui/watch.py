"""Incremental readers of run folders: what the TUI knows about each run (no Textual here).

The TUI talks to a training only through its run folder. A ``RunWatcher`` keeps a byte offset
into ``events.jsonl`` and reads only what was appended since the last poll; a line flushed in two
writes (or torn by a killed writer) waits in a buffer until its newline arrives. A file that
shrank, or whose first bytes or inode changed (``clean``, ``--fresh`` rewriting, a deleted and
recreated run), is read again from the start. A ``RunStoreWatcher`` does this for every run of a
runs root; a poll of an idle run costs a few ``stat`` calls.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.runs.events import EventTail
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_holder_alive
from cellbench.runs.store import RunStore
from cellbench.runs.summary import read_run_config


def as_number(value: Any) -> float | None:
    """A float from an event field; the writer stores NaN/inf as the strings "nan"/"inf"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class StepLoss:
    epoch: int
    step: int  # global optimizer step
    loss: float | None


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    train_loss: float | None
    val_loss: float | None
    metrics: dict[str, float | None]
    lr: float | None
    time_s: float | None


@dataclass(frozen=True)
class MemoryReading:
    time: float
    device: str
    allocated: int | None
    reserved: int | None
    peak: int | None
    rss: int | None
    total: int | None = None  # the device's memory (CUDA runs)

    @property
    def cuda(self) -> bool:
        return self.allocated is not None


@dataclass(frozen=True)
class CheckWarning:
    time: float | None
    check: str
    severity: str
    message: str


@dataclass
class RunState:
    """Everything the current attempt of a run has said so far (a ``--fresh`` start clears it)."""

    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    started_ever: bool = False
    steps: list[StepLoss] = field(default_factory=list)
    epochs: list[EpochRow] = field(default_factory=list)
    memory: list[MemoryReading] = field(default_factory=list)
    warnings: list[CheckWarning] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "run_start":
            self._start(event)
        elif kind == "step":
            self.steps.append(
                StepLoss(
                    int(event.get("epoch") or 0),
                    int(event.get("step") or 0),
                    as_number(event.get("loss")),
                )
            )
        elif kind == "epoch":
            self._epoch(event)
        elif kind == "memory":
            self.memory.append(
                MemoryReading(
                    time=float(event.get("time") or 0.0),
                    device=str(event.get("device") or ""),
                    allocated=event.get("allocated"),
                    reserved=event.get("reserved"),
                    peak=event.get("peak"),
                    rss=event.get("rss"),
                    total=event.get("total"),
                )
            )
        elif kind == "warning":
            self.warnings.append(
                CheckWarning(
                    time=event.get("time"),
                    check=str(event.get("check") or "?"),
                    severity=str(event.get("severity") or "warning"),
                    message=str(event.get("message") or ""),
                )
            )
        elif kind == "eval":
            self.evals.append(event)
        elif kind == "run_end":
            self.end = event
            self.best = event.get("best") or self.best

    def _start(self, event: dict[str, Any]) -> None:
        self.start, self.end, self.started_ever = event, None, True
        if event.get("resumed"):
            # a resume redoes the epochs after its checkpoint: forget what the killed attempt
            # logged past it, so no step or epoch is drawn twice
            kept = int(event.get("start_epoch") or 0)
            self.steps = [s for s in self.steps if s.epoch <= kept]
            self.epochs = [e for e in self.epochs if e.epoch <= kept]
            return
        # a new attempt (a new run or --fresh): same rule as `cellbench runs list`
        self.steps, self.epochs, self.memory, self.warnings, self.evals = [], [], [], [], []
        self.best = None

    def _epoch(self, event: dict[str, Any]) -> None:
        row = EpochRow(
            epoch=int(event.get("epoch") or 0),
            train_loss=as_number(event.get("train_loss")),
            val_loss=as_number(event.get("val_loss")),
            metrics={k: as_number(v) for k, v in (event.get("metrics") or {}).items()},
            lr=as_number(event.get("lr")),
            time_s=as_number(event.get("time_s")),
        )
        self.epochs = [e for e in self.epochs if e.epoch != row.epoch] + [row]
        self.best = event.get("best") or self.best


class RunWatcher:
    """One run folder, read incrementally. ``poll()`` says whether anything changed;
    ``version`` counts the changes, so a view re-renders only when it moved."""

    def __init__(self, run: RunPaths):
        self.run = run
        self.state = RunState()
        self.status = "created"
        self.config: dict[str, Any] = {}
        self.version = 0
        self._tail = EventTail(run.events)
        self._config_mtime: float | None = None
        self._config_problem: str | None = None

    def poll(self, max_bytes: int | None = None) -> bool:
        skipped = len(self._tail.log.bad)
        events, reset = self._tail.read(max_bytes)
        if reset:
            self.state = RunState()
        for event in events:
            self.state.apply(event)
        changed = reset or bool(events) or len(self._tail.log.bad) != skipped
        changed |= self._read_config()
        status = self._status()
        changed |= status != self.status
        self.status = status
        if changed:
            self.version += 1
        return changed

    def _status(self) -> str:
        # the rules of cellbench.runs.summary.summarize, applied to what was read incrementally
        # (summarize re-reads the whole file: too much once a second for every run)
        state = self.state
        if not state.started_ever:
            return "created"
        if state.end is not None:
            return str(state.end.get("status", "completed"))
        return "running" if lock_holder_alive(self.run.lock) else "crashed"

    def _read_config(self) -> bool:
        try:
            mtime = self.run.config.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        # the same check as `runs list`: a config that does not load is {} and marks the run
        self.config, self._config_problem = read_run_config(self.run)
        return True

    @property
    def behind(self) -> bool:
        """Part of events.jsonl is still unread (a big file is read over several polls)."""
        return self._tail.behind

    @property
    def loaded(self) -> float:
        """How much of events.jsonl has been read, 0 to 1."""
        size = self._tail.size
        return 1.0 if not size else min(1.0, self._tail.offset / size)

    @property
    def damaged(self) -> list[str]:
        """One reason per damaged file (events read so far, config), as `runs list` says."""
        return [r for r in (self._tail.log.damage(), self._config_problem) if r]

    # ------------------------------------------------------------------ derived views

    @property
    def model(self) -> str | None:
        start = self.state.start or {}
        return start.get("model") or (self.config.get("model") or {}).get("name")

    @property
    def epochs_done(self) -> int:
        return max((e.epoch for e in self.state.epochs), default=0)

    @property
    def epochs_planned(self) -> int | None:
        epochs = (self.config.get("train") or {}).get("epochs")
        return int(epochs) if isinstance(epochs, int) else None

    @property
    def best(self) -> dict[str, Any] | None:
        return self.state.best

    def steps_per_epoch(self) -> float | None:
        """Estimated from the step events: a step s of epoch e has (e-1)·n < s ≤ e·n, so n is at
        least s/e. Exact once an epoch's last step is logged; during epoch 1 it is the steps
        seen so far (the epoch-1 curve then spans the whole first epoch)."""
        bounds = [s.step / s.epoch for s in self.state.steps if s.epoch > 0 and s.step > 0]
        return math.ceil(max(bounds) - 1e-9) if bounds else None

    def step_curve(self) -> tuple[list[float], list[float]]:
        """Per-step training losses, x in (fractional) epochs; non-finite losses left out."""
        per_epoch = self.steps_per_epoch()
        if not per_epoch:
            return [], []
        points = [(s.step / per_epoch, s.loss) for s in self.state.steps if is_finite(s.loss)]
        return [p[0] for p in points], [p[1] for p in points]

    def epoch_curve(self, name: str) -> tuple[list[float], list[float]]:
        """``train_loss``, ``val_loss`` or a metric per completed epoch (finite values only)."""
        points = []
        for row in self.state.epochs:
            value = getattr(row, name) if name in ("train_loss", "val_loss", "lr") else None
            if value is None:
                value = row.metrics.get(name)
            if is_finite(value):
                points.append((float(row.epoch), value))
        return [p[0] for p in points], [p[1] for p in points]

    # ------------------------------------------------------------------ curves

    def curve_names(self) -> list[str]:
        """What the curves panel can draw, from what the run logged (its history's columns,
        which the trainer names after its task's ``loss_names`` and ``metric_names``): ``loss``
        (train_loss, val_loss and the step losses), ``loss_<term>`` per loss term (train and
        val), each validation metric, ``lr``. No list of task names here: a new task's metrics
        show up by themselves."""
        columns: dict[str, None] = {}
        for row in self.state.epochs:
            columns.update(dict.fromkeys(row.metrics))
        terms: dict[str, None] = {}
        metrics = []
        for column in columns:
            for split in ("train_loss_", "val_loss_"):
                if column.startswith(split):
                    terms[column[len(split) :]] = None
                    break
            else:
                metrics.append(column)
        names = ["loss", *(f"loss_{t}" for t in terms), *metrics]
        if any(row.lr is not None for row in self.state.epochs):
            names.append("lr")
        return names

    def curve(self, name: str) -> list[tuple[str, list[float], list[float]]]:
        """The ``(label, epochs, values)`` series of one ``curve_names`` entry."""
        if name == "loss":
            columns = ["train_loss", "val_loss"]
        elif name.startswith("loss_"):
            columns = [f"train_{name}", f"val_{name}"]
        else:
            columns = [name]
        return [(c, *self.epoch_curve(c)) for c in columns]

    @property
    def monitored(self) -> str | None:
        """The metric early stopping and best.pt follow (from the ``best`` the run reports)."""
        return (self.state.best or {}).get("metric")


@dataclass
class StoreChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class RunStoreWatcher:
    """Every run of a runs root, keyed by folder name (``0002-digestive``), in id order."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.store = RunStore(root)
        self.watchers: dict[str, RunWatcher] = {}

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def behind(self) -> bool:
        return any(w.behind for w in self.watchers.values())

    def poll(self, max_bytes: int | None = None) -> StoreChanges:
        """Read what every run appended; ``max_bytes`` caps each run's read (call again while
        ``behind``), so a huge events file is shown while it is being read."""
        changes = StoreChanges()
        runs = self.store.runs()
        current = {run.root.name for run in runs}
        for folder in [f for f in self.watchers if f not in current]:
            del self.watchers[folder]
            changes.removed.append(folder)
        watchers = {}
        for run in runs:
            folder = run.root.name
            watcher = self.watchers.get(folder)
            if watcher is None:
                watcher = RunWatcher(run)
                changes.added.append(folder)
            if watcher.poll(max_bytes) and folder not in changes.added:
                changes.changed.append(folder)
            watchers[folder] = watcher
        self.watchers = watchers  # rebuilt so iteration follows the store's id order
        return changes

    def get(self, folder: str) -> RunWatcher | None:
        return self.watchers.get(folder)

    def newest_running(self) -> str | None:
        running = [f for f, w in self.watchers.items() if w.status == "running"]
        return running[-1] if running else None
