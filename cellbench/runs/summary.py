"""What a run is and how it went, derived from its events (never stored separately).

Status: ``created`` (no run_start yet) · ``running`` (started, not ended, lock held by a live
process) · ``crashed`` (started, not ended, no live writer) · else the ``run_end`` status
(``completed``, ``failed``, ``interrupted``). Only the last run_start counts: a resumed run that
was interrupted before is ``running`` again. Epochs and best come from the current attempt: the
events since the last run_start that was not a resume (a ``--fresh`` start discards the rest).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cellbench.errors import BadInputError
from cellbench.runs.events import read_event_log
from cellbench.runs.history import read_history_log
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_holder_alive


@dataclass
class RunSummary:
    id: int
    name: str
    folder: str
    task: str | None
    model: str | None
    status: str
    epochs: int
    best_metric: str | None
    best_value: float | None
    best_mode: str | None  # "min"/"max" as the run judged it (None for runs before it was kept)
    started: float | None
    duration_s: float | None
    warnings: int
    damaged: list[str] = field(default_factory=list)  # one reason per damaged file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_run_config(run: RunPaths) -> tuple[dict[str, Any], str | None]:
    """A run's saved config as a mapping, and why it is damaged (None when it loads as a
    config, or is not written yet). A damaged config gives ``{}``."""
    from cellbench.config import config_from_dict, read_yaml

    if not run.config.exists():
        return {}, None
    try:
        data = read_yaml(run.config)
        config_from_dict(data, source=str(run.config))
    except (BadInputError, OSError) as exc:
        return {}, str(exc).replace(f"{run.root}/", "")
    return data, None


def _task_and_model(start: dict | None, config: dict[str, Any]) -> tuple[str | None, str | None]:
    if start and start.get("task"):
        return start.get("task"), start.get("model")
    return config.get("task"), (config.get("model") or {}).get("name")


def _training_seconds(events: list[dict], running: bool) -> float | None:
    """Time spent training: each run_start to the last training event after it. Pauses between
    an interruption and its resume, and later ``eval`` events, do not count."""
    total, segment_start, last = 0.0, None, None
    for event in events:
        if event.get("kind") == "eval" or event.get("time") is None:
            continue
        t = float(event["time"])
        if event.get("kind") == "run_start":
            if segment_start is not None:
                total += last - segment_start
            segment_start = t
        last = t
    if segment_start is None:
        return None
    return total + (time.time() if running else last) - segment_start


def _as_float(value: Any) -> float | None:
    # the writer stores a non-finite best as "nan"/"inf" (schema-checked): a float for readers
    return None if value is None else float(value)


def damage_of(run: RunPaths, log=None, history=None, config_problem=None) -> list[str]:
    """One reason per damaged file of ``run`` (events, history, config), in that order."""
    log = log if log is not None else read_event_log(run.events)
    history = history if history is not None else read_history_log(run.history)
    reasons = [log.damage(), history.damage(), config_problem]
    return [r for r in reasons if r]


def summarize(run: RunPaths) -> RunSummary:
    log = read_event_log(run.events)
    events = log.events
    starts = [i for i, e in enumerate(events) if e.get("kind") == "run_start"]
    first_start = events[starts[0]] if starts else None
    current = events[starts[-1] :] if starts else []
    end = next((e for e in reversed(current) if e.get("kind") == "run_end"), None)
    if not starts:
        status = "created"
    elif end is not None:
        status = str(end.get("status", "completed"))
    elif lock_holder_alive(run.lock):
        status = "running"
    else:
        status = "crashed"

    attempt = [i for i in starts if not events[i].get("resumed")]
    attempt_events = events[attempt[-1] :] if attempt else events
    epoch_events = [e for e in attempt_events if e.get("kind") == "epoch"]
    epochs = max((int(e.get("epoch", 0)) for e in epoch_events), default=0)
    best = (end or {}).get("best") or next(
        (e.get("best") for e in reversed(epoch_events) if e.get("best")), None
    )
    attempt_start = events[attempt[-1]] if attempt else first_start
    started = attempt_start.get("time") if attempt_start else None
    duration = _training_seconds(attempt_events, running=status == "running") if starts else None
    config, config_problem = read_run_config(run)
    task, model = _task_and_model(attempt_start, config)
    return RunSummary(
        id=run.id,
        name=run.name,
        folder=run.root.name,
        task=task,
        model=model,
        status=status,
        epochs=epochs,
        best_metric=(best or {}).get("metric"),
        best_value=_as_float((best or {}).get("value")),
        best_mode=(best or {}).get("mode"),
        started=started,
        duration_s=duration,
        warnings=sum(1 for e in attempt_events if e.get("kind") == "warning"),
        damaged=damage_of(run, log=log, config_problem=config_problem),
    )
