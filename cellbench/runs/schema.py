"""The fields that readers of ``events.jsonl`` use, per event kind, and the type each must have.

This is the one place that decides whether an event line can be used. ``runs list/show/compare``,
the summary and the TUI read only events that pass ``event_problem``; a line that does not (not a
JSON object, binary garbage, ``"epoch": "x"``, ``"time": 1e400``, a list) is skipped and counted,
and the run shows as *damaged* with the first problem. Fields no reader uses, and kinds a newer
cellbench may add, pass untouched: a reader never needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the writer stores non-finite floats as these strings (JSON has no NaN/inf)
NON_FINITE = ("nan", "inf", "-inf")


@dataclass(frozen=True)
class FieldType:
    """A check with the words that name it in an error ("an integer >= 1")."""

    accepts: Callable[[Any], bool]
    name: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_value(v: Any) -> bool:
    # a loss or metric: any real (a diverged loss is inf or nan), or the writer's strings for them
    return _is_real(v) or v in NON_FINITE


TEXT = FieldType(lambda v: isinstance(v, str), "a string")
FLAG = FieldType(lambda v: isinstance(v, bool), "true or false")
COUNT = FieldType(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
EPOCH = FieldType(lambda v: _is_int(v) and v >= 1, "an integer >= 1")
BYTES = FieldType(lambda v: _is_real(v) and 0 <= v < math.inf, "a byte count")
INSTANT = FieldType(lambda v: _is_real(v) and math.isfinite(v), "a finite number")
VALUE = FieldType(_is_value, "a number")
VALUES = FieldType(
    lambda v: isinstance(v, dict) and all(x is None or _is_value(x) for x in v.values()),
    "a mapping of numbers",
)
BEST = FieldType(
    lambda v: (
        isinstance(v, dict)
        and (v.get("metric") is None or isinstance(v["metric"], str))
        and v.get("mode") in (None, "min", "max")
        and (v.get("value") is None or _is_value(v["value"]))
        and (v.get("epoch") is None or _is_int(v["epoch"]))
    ),
    "a mapping {metric: string, mode: min|max, value: number, epoch: integer}",
)
RESET = FieldType(
    lambda v: (
        isinstance(v, dict)
        and isinstance(v.get("removed", []), list)
        and (v.get("bytes") is None or _is_real(v["bytes"]))
    ),
    "a mapping {removed: list, bytes: number}",
)

# kind -> field -> (type, required). Optional fields may be missing or null.
FIELDS: dict[str, dict[str, tuple[FieldType, bool]]] = {
    "run_start": {
        "task": (TEXT, False),
        "model": (TEXT, False),
        "device": (TEXT, False),
        "amp": (TEXT, False),
        "params": (COUNT, False),
        "resumed": (FLAG, False),
        "start_epoch": (COUNT, False),
        "reset": (RESET, False),
        "init_from": (TEXT, False),
    },
    "step": {
        "epoch": (COUNT, False),
        "step": (COUNT, False),
        "loss": (VALUE, False),
        "lr": (VALUE, False),
        "samples_per_s": (VALUE, False),
    },
    "epoch": {
        "epoch": (EPOCH, True),
        "train_loss": (VALUE, False),
        "val_loss": (VALUE, False),
        "metrics": (VALUES, False),
        "lr": (VALUE, False),
        "best": (BEST, False),
        "time_s": (VALUE, False),
    },
    "eval": {"split": (TEXT, False), "checkpoint": (TEXT, False), "metrics": (VALUES, False)},
    "warning": {"check": (TEXT, False), "severity": (TEXT, False), "message": (TEXT, False)},
    "memory": {
        "device": (TEXT, False),
        "allocated": (BYTES, False),
        "reserved": (BYTES, False),
        "peak": (BYTES, False),
        "rss": (BYTES, False),
    },
    "run_end": {
        "status": (TEXT, True),
        "reason": (TEXT, False),
        "best": (BEST, False),
        "signal": (TEXT, False),
    },
}
COMMON: dict[str, tuple[FieldType, bool]] = {"time": (INSTANT, False)}


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_problem(event: Any) -> str | None:
    """Why ``event`` (a parsed JSON line) cannot be used, or None when every field readers use
    has its type."""
    if not isinstance(event, dict):
        return f"not a JSON object ({type(event).__name__})"
    kind = event.get("kind")
    if not isinstance(kind, str):
        return f"kind: expected a string, got {_shown(kind)}"
    for name, (ftype, required) in {**COMMON, **FIELDS.get(kind, {})}.items():
        value = event.get(name)
        if value is None:
            if required:
                return f"{kind} event without '{name}'"
            continue
        if not ftype.accepts(value):
            return f"{kind} event: {name}: expected {ftype.name}, got {_shown(value)}"
    return None
