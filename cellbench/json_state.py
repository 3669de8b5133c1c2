"""A ``state.json`` held in memory and saved atomically after every change: a sweep's and a
workflow's. One process writes it (the holder of the sweep's or workflow's lock); within that
process its threads (trial workers, the ETA monitor) change it through one object, under one
lock, so no two saves interleave and a reader always finds a whole file."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from cellbench.atomic import atomic_write_json
from cellbench.errors import BadInputError


def read_json(path: Path, default: Any, what: str = "state file") -> Any:
    """The JSON in ``path``, ``default`` when there is no file; an unreadable one is a one-line
    ``BadInputError`` naming the file and ``what`` it is."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable {what} ({exc})") from exc


class JsonState:
    """``path``'s JSON object in ``data``, with ``defaults`` for the keys it lacks; ``entry``
    and ``update_entry`` read and change one ``{key: {...}}`` of a section (a trial, a phase)."""

    def __init__(self, path: Path, defaults: dict[str, Any], what: str = "state file"):
        self.path = path
        self.what = what
        data = read_json(path, {}, what)
        if not isinstance(data, dict):
            raise BadInputError(f"{path}: damaged {what} (not a JSON object)")
        for key, value in defaults.items():
            data.setdefault(key, value)
            # a section (phases, trials) is changed in place: anything but an object would
            # fail half-way through a run, so it is refused before anything runs
            if isinstance(value, dict) and not isinstance(data[key], dict):
                raise BadInputError(f"{path}: damaged {what} ('{key}' is not an object)")
        self.data: dict[str, Any] = data
        self._lock = threading.Lock()

    def _entry(self, section: str, key: str) -> dict[str, Any] | None:
        """``data[section][key]``, None when absent; one that is not an object is refused."""
        value = self.data[section].get(key)
        if value is not None and not isinstance(value, dict):
            raise BadInputError(
                f"{self.path}: damaged {self.what} ('{section}.{key}' is not an object)"
            )
        return value

    def entry(self, section: str, key: str) -> dict[str, Any]:
        """A copy of ``data[section][key]`` (``{"status": "pending"}`` when absent), taken
        while no other thread changes it."""
        with self._lock:
            return dict(self._entry(section, key) or {"status": "pending"})

    def update_entry(self, section: str, key: str, **values: Any) -> None:
        with self._lock:
            if self._entry(section, key) is None:
                self.data[section][key] = {"status": "pending"}
            self.data[section][key].update(values)
            self._save()

    def set(self, **values: Any) -> None:
        with self._lock:
            self.data.update(values)
            self._save()

    def _save(self) -> None:
        """Under the lock: the whole state, atomically."""
        self.data["updated"] = time.time()
        atomic_write_json(self.path, self.data)
