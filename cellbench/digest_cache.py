"""sha256 of large files (backbone weights), computed once and remembered by path, size and
modification time.

Loading an ``h-optimus-0`` run checks the backbone weights against the feature store's sha256;
hashing the 4.5 GB file at every ``predict``, ``eval`` or organ load cost tens of seconds. The
digest is cached in ``sha256.json`` under the user cache folder (``$CELLBENCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/cellbench``, else ``~/.cache/cellbench``), never beside the weights (their
folder may be read-only or shared). A file whose size or ``mtime_ns`` changed is hashed again.
The cache is written atomically; an unreadable or damaged cache is ignored and an unwritable one
only costs the next hash, never the load.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from cellbench.atomic import atomic_write_json
from cellbench.data import npyio

CACHE_ENV = "CELLBENCH_CACHE_DIR"
CACHE_FILE = "sha256.json"
MAX_ENTRIES = 256  # oldest entries dropped beyond this: the cache stays a small file


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cellbench"


def _read(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of ``path``, from the cache when its size and mtime still match."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache = cache_dir() / CACHE_FILE
    entries = _read(cache)
    entry = entries.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    digest = npyio.sha256_file(path)
    entries.pop(key, None)
    entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    # a read-only home or cache folder: the digest is right, it is only not remembered
    with contextlib.suppress(OSError):
        atomic_write_json(cache, entries)
    return digest
