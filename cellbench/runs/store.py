"""Run folders ``<root>/<id>-<name>/``: sequential ids, creation, resolution by id/name/folder.

The root is ``--runs-dir``, else ``$CELLBENCH_RUNS_DIR``, else ``./runs``.
"""

from __future__ import annotations

import difflib
import fcntl
import os
from pathlib import Path

from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.runs.layout import NAME_RE, RUN_DIR_RE, RunPaths

RUNS_DIR_ENV = "CELLBENCH_RUNS_DIR"


def default_runs_root() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_runs_root()

    def runs(self) -> list[RunPaths]:
        """Every run folder, by id."""
        if not self.root.is_dir():
            return []
        found = [
            RunPaths(p) for p in self.root.iterdir() if p.is_dir() and RUN_DIR_RE.fullmatch(p.name)
        ]
        return sorted(found, key=lambda r: r.id)

    def create(self, name: str, unique: bool = False) -> RunPaths:
        """Create ``<next id>-<name>``; ids stay unique when processes create runs at once.

        ``unique=True`` (a default name, not one the user chose): when ``name`` is taken, the
        first free ``name-2``, ``name-3``... is picked under the same lock as the id, so two
        processes started together never pick the same name."""
        if not NAME_RE.fullmatch(name):
            raise UsageError(
                f"run name {name!r}: use letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if name.isdigit():
            raise UsageError(f"run name '{name}': a name cannot be only digits (it reads as an id)")
        self.root.mkdir(parents=True, exist_ok=True)
        # One flock around "scan for the highest id, make the folder": two processes can't
        # both pick the same id, and a name is never taken twice.
        with open(self.root / ".ids.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            existing = self.runs()
            if unique:
                name = _first_free(name, {r.name for r in existing})
            if any(r.name == name for r in existing):
                raise RunConflict(f"{self.root}: a run named '{name}' already exists")
            next_id = max((r.id for r in existing), default=0) + 1
            path = self.root / f"{next_id:04d}-{name}"
            path.mkdir()
        return RunPaths(path)

    def find(self, ref: str | int) -> RunPaths | None:
        """The run ``ref`` names (id, name or folder name), or None."""
        ref = str(ref).strip().rstrip("/")
        ref = Path(ref).name if "/" in ref else ref
        runs = self.runs()
        for run in runs:
            if ref == run.root.name:
                return run
        if ref.isdigit():
            for run in runs:
                if run.id == int(ref):
                    return run
            return None
        matches = [r for r in runs if r.name == ref]
        return matches[-1] if matches else None

    def resolve(self, ref: str | int) -> RunPaths:
        """Like ``find`` but a missing run is an error (exit 3) with a did-you-mean."""
        run = self.find(ref)
        if run is not None:
            return run
        names = [r.name for r in self.runs()] + [r.root.name for r in self.runs()]
        close = difflib.get_close_matches(str(ref), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BadInputError(f"{self.root}: no run '{ref}'{hint}")


def _first_free(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
