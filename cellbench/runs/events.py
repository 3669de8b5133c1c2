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


HEAD_BYTES = 64  # enough to tell a replaced file: the first line starts with its own timestamp


class EventTail:
    """The complete JSON lines appended to a file since the last ``read``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._pending = b""
        self._head = b""
        self._identity: tuple[int, int] | None = None

    def _restart(self) -> None:
        self._offset, self._pending, self._head, self._identity = 0, b"", b"", None

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """``(new events, reset)``; ``reset`` says the file was replaced, truncated or removed
        and the events are the new file's from its start."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            reset = self._identity is not None
            self._restart()
            return [], reset
        reset = False
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and (
            identity != self._identity or stat.st_size < self._offset or not self._same_head()
        ):
            self._restart()
            reset = True
        self._identity = identity
        if stat.st_size == self._offset:
            return [], reset
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        if len(self._head) < HEAD_BYTES:
            self._head = (self._head + data)[:HEAD_BYTES]
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [e for e in map(_parse_bytes, lines) if e is not None], reset

    def _same_head(self) -> bool:
        # a file truncated and rewritten past our offset between two polls keeps its inode and
        # its size grows: only its first bytes tell it is another file
        if not self._head:
            return True
        with open(self.path, "rb") as fh:
            return fh.read(len(self._head)) == self._head


def _parse_bytes(line: bytes) -> dict[str, Any] | None:
    # a torn fragment left by a killed writer, or a foreign line, is skipped
    return _parse(line.decode("utf-8", errors="replace"))


def follow_events(
    path: str | os.PathLike,
    stop: Callable[[], bool] = lambda: False,
    poll: float = 0.2,
    from_start: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended; ends when ``stop()`` is true and nothing is left.

    A missing file is waited for; a partial line is kept until its newline arrives, so a line
    flushed in two writes is read once and whole.
    """
    tail = EventTail(path)
    if not from_start:
        tail.read()  # skip what is already there
    while True:
        events, _ = tail.read()
        if events:
            yield from events
            continue
        if stop():
            return
        time.sleep(poll)
