"""The append-only event stream ``events.jsonl``: one JSON object per line, flushed per line.

Kinds: run_start, step, epoch, eval, warning, memory, run_end (see DESIGN.md). Readers tolerate a
torn last line (a writer killed mid-line) and can follow a growing file, as the TUI does.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EVENT_KINDS = ("run_start", "step", "epoch", "eval", "warning", "memory", "run_end")


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as strings so every line stays parseable by any reader
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class EventWriter:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        # held open for the writer's lifetime (closed by close() / the context manager)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def _repair_torn_tail(self) -> None:
        # A writer killed mid-line leaves no trailing newline; start our lines on a fresh one
        # so the torn fragment stays an isolated bad line instead of corrupting the next event.
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    with open(self.path, "a", encoding="utf-8") as out:
                        out.write("\n")

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = {"kind": kind, "time": time.time(), **_clean(fields)}
        self._fh.write(json.dumps(event, default=str) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def read_events(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """All complete events of a file; bad or torn lines are skipped, a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line: its writer is still writing it, or died
            event = _parse(line)
            if event is not None and (kind is None or event.get("kind") == kind):
                events.append(event)
    return events


def follow_events(
    path: str | os.PathLike,
    stop: Callable[[], bool] = lambda: False,
    poll: float = 0.2,
    from_start: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended; ends when ``stop()`` is true and nothing is left.

    A partial line is kept until its newline arrives, so a line flushed in two writes is
    read once and whole.
    """
    path = Path(path)
    pending = ""
    position = 0
    while not path.exists():
        if stop():
            return
        time.sleep(poll)
    if not from_start:
        position = path.stat().st_size
    while True:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(position)
            chunk = fh.read()
            position = fh.tell()
        if chunk:
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                event = _parse(line)
                if event is not None:
                    yield event
            continue
        if stop():
            return
        time.sleep(poll)
