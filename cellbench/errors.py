"""Errors that map to cellbench's documented exit codes.

Every failure a user can cause is raised as one of these; the CLI prints the message on one
line (stderr) and exits with the class's code. Messages name the file and the problem.

    0 ok · 1 a check failed · 2 bad usage · 3 bad input data/file · 4 run conflict · 130 interrupted
"""

from __future__ import annotations

import re
from enum import IntEnum

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    RUN_CONFLICT = 4
    INTERRUPTED = 130


class CellbenchError(Exception):
    """Base class: a user-facing failure with a one-line message and an exit code."""

    exit_code: int = ExitCode.CHECK_FAILED


class CheckFailed(CellbenchError):
    """A validation or sanity check found an error (exit 1)."""

    exit_code = ExitCode.CHECK_FAILED


class UsageError(CellbenchError):
    """Bad options, unknown config keys given on the command line (exit 2)."""

    exit_code = ExitCode.USAGE


class BadInputError(CellbenchError):
    """A file or dataset that cannot be used as it is (exit 3)."""

    exit_code = ExitCode.BAD_INPUT


class RunConflict(CellbenchError):
    """The run exists, is locked by a live process, or would be overwritten (exit 4)."""

    exit_code = ExitCode.RUN_CONFLICT


def one_line(exc: BaseException | str, limit: int = 240) -> str:
    """The first non-empty line of an exception's text, ANSI escapes stripped, at most ``limit``
    characters: library errors (torch's weights_only refusal, timm, PIL) span several lines and
    colour codes, but an error message, a ``run_end`` reason or metrics.json gets one line."""
    text = _ANSI_ESCAPE.sub("", str(exc))
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        line = type(exc).__name__ if isinstance(exc, BaseException) else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
