"""The append-only event stream ``events.jsonl``: one JSON object per line, flushed per line.

Kinds: run_start, step, epoch, eval, warning, memory, run_end (see DESIGN.md). Readers tolerate a
torn last line (a writer killed mid-line) and can follow a growing file, as the TUI does.

Readers keep only the events whose fields have the types ``cellbench.runs.schema`` gives; any other
line is skipped and counted (``EventLog.bad``), so one bad line makes a run *damaged*, never
unreadable. A line torn by a killed writer is not damage: the next writer ends it with a newline
and says so in a ``warning`` event (check ``torn_line``, field ``line``), which excuses that line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench import strict_json
from cellbench.runs.schema import event_problem

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
        torn_line = self._repair_torn_tail()
        # held open for the writer's lifetime (closed by close() / the context manager)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if torn_line is not None:
            self.emit(
                "warning",
                check=TORN_LINE_CHECK,
                severity="info",
                message=f"{self.path.name} line {torn_line}: torn by a killed writer, skipped",
                line=torn_line,
            )

    def _repair_torn_tail(self) -> int | None:
        """End a line torn by a killed writer with a newline; return its 1-based number.

        Our lines then start on a fresh line, so the fragment stays an isolated bad line instead
        of corrupting the next event. (Truncating it instead would move bytes under the offset
        of a reader following the file.)"""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return None
            fh.seek(0)
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("\n")
        return lines + 1

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if isinstance(fields.get("metrics"), dict):
            # an undefined metric (a val fold without nuclei) is null, as in metrics.json; a
            # loss keeps "nan"/"inf" below: there it says the training diverged
            fields["metrics"] = strict_json.finite(fields["metrics"])
        event = {"kind": kind, "time": time.time(), **_clean(fields)}
        try:
            self._fh.write(strict_json.dumps(event) + "\n")  # NaN/inf as null
            self._fh.flush()
        except OSError as exc:  # a full disk: name the file (a failed write names none)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc
        return event

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError:
            # a full disk: emit() already raised naming the file; the unwritten line is lost
            # and closing must not raise a second, nameless error over the first
            with contextlib.suppress(OSError):
                self._fh.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TORN_LINE_CHECK = "torn_line"


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based line number in the file
    problem: str


@dataclass
class EventLog:
    """The usable events of a file and the lines skipped as unusable."""

    events: list[dict[str, Any]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    _torn: set[int] = field(default_factory=set)
    _lines: int = 0

    def add_line(self, raw: bytes | str) -> dict[str, Any] | None:
        """Take the next complete line; return its event, or None when it was skipped."""
        self._lines += 1
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            return None  # an empty line (a torn fragment's repair newline on its own) says nothing
        try:
            event = json.loads(text)
            problem = event_problem(event)
        except (ValueError, RecursionError):
            event, problem = None, "not JSON"
        if problem is not None:
            self.bad.append(BadLine(self._lines, problem))
            return None
        torn = event.get("kind") == "warning" and event.get("check") == TORN_LINE_CHECK
        if torn and isinstance(event.get("line"), int):
            self._torn.add(event["line"])
        self.events.append(event)
        return event

    @property
    def damaged_lines(self) -> list[BadLine]:
        return [b for b in self.bad if b.line not in self._torn]

    def damage(self, name: str = "events.jsonl") -> str | None:
        """One line naming the file, how many lines were skipped and the first problem."""
        bad = self.damaged_lines
        if not bad:
            return None
        if bad[0].line == 0:
            return f"{name}: {bad[0].problem}"
        plural = "s" if len(bad) > 1 else ""
        return f"{name}: {len(bad)} bad line{plural} skipped (line {bad[0].line}: {bad[0].problem})"


def read_event_log(path: str | os.PathLike) -> EventLog:
    """Every complete line of a file sorted into usable events and skipped lines; a torn last
    line (no newline yet) is left out, a missing file is empty."""
    log = EventLog()
    path = Path(path)
    if not path.exists():
        return log
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn last line: its writer is still writing it, or died
                log.add_line(line)
    except OSError as exc:  # a folder in its place, no permission: damaged, not a traceback
        log.bad.append(BadLine(0, f"cannot read ({exc.strerror or exc})"))
    return log


def read_events(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """All usable events of a file; bad or torn lines are skipped, a missing file is empty."""
    events = read_event_log(path).events
    return events if kind is None else [e for e in events if e.get("kind") == kind]


HEAD_BYTES = 64  # enough to tell a replaced file: the first line starts with its own timestamp


class EventTail:
    """The complete JSON lines appended to a file since the last ``read``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._pending = b""
        self._head = b""
        self._identity: tuple[int, int] | None = None
        self.size = 0  # the file's size at the last read
        self.log = EventLog()  # every line read so far, sorted: what a damaged run reports

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def behind(self) -> bool:
        """Bytes were left unread by the last ``read(max_bytes)``."""
        return self.size > self._offset

    def _restart(self) -> None:
        self._offset, self._pending, self._head, self._identity = 0, b"", b"", None
        self.size = 0
        self.log = EventLog()

    def read(self, max_bytes: int | None = None) -> tuple[list[dict[str, Any]], bool]:
        """``(new events, reset)``; ``reset`` says the file was replaced, truncated or removed
        and the events are the new file's from its start. ``max_bytes`` caps one read (a 200 MB
        file is then read over several calls; ``behind`` says whether bytes are left)."""
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
        self.size = stat.st_size
        if stat.st_size == self._offset:
            return [], reset
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read() if max_bytes is None else fh.read(max_bytes)
        except OSError as exc:  # a folder in its place, no permission: damaged, said once
            if not any(b.line == 0 for b in self.log.bad):
                self.log.bad.append(BadLine(0, f"cannot read ({exc.strerror or exc})"))
            return [], reset
        self._offset += len(data)
        self.size = stat.st_size
        if len(self._head) < HEAD_BYTES:
            self._head = (self._head + data)[:HEAD_BYTES]
        *lines, self._pending = (self._pending + data).split(b"\n")
        events = [self.log.add_line(line) for line in lines]
        # the log keeps what damage() needs; the caller gets the new events only
        self.log.events.clear()
        return [e for e in events if e is not None], reset

    def _same_head(self) -> bool:
        # a file truncated and rewritten past our offset between two polls keeps its inode and
        # its size grows: only its first bytes tell it is another file
        if not self._head:
            return True
        with open(self.path, "rb") as fh:
            return fh.read(len(self._head)) == self._head


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
