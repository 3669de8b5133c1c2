"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a torn file. A failed write
(a full disk) raises an OSError naming the destination. A killed process can leave its temporary
file (``.<name>.<random>.tmp``); ``remove_stale_temps`` removes those of a folder whose writer is
known to be gone (the run lock's new holder calls it).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary sibling of ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named as TEMP_NAME says, so remove_stale_temps can find it after a kill
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared like any file
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        # name the destination: a failed write() or fsync() (ENOSPC, EIO) names no file, and a
        # failed rename names our temp file, which is gone by the time the user reads it
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (``cellbench.strict_json``): an undefined number is written ``null``."""
    from cellbench.strict_json import dumps

    return atomic_write_text(path, dumps(data, indent=2, sort_keys=False) + "\n")


# mkstemp's names: our prefix and suffix around 8 characters of [a-z0-9_]
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``atomic_write`` left in ``folder`` (not below it) when its
    process was killed. Only call it when no live process can be writing there."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # no folder (yet), or unreadable: nothing of ours to clean
    for entry in entries:
        if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
