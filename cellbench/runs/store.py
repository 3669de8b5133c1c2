"""Run folders ``<root>/<id>-<name>/``: sequential ids, creation, resolution by id/name/folder.

The root is ``--runs-dir``, else ``$CELLBENCH_RUNS_DIR``, else the workspace's ``paths.runs``
(``cellbench.yaml``, found from the current folder up), else ``./runs``.
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
    env = os.environ.get(RUNS_DIR_ENV)
    if env:
        return Path(env)
    from cellbench.workspace import workspace_folder

    return workspace_folder("runs", "runs")


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_runs_root()
        if self.root.exists() and not self.root.is_dir():
            # else a sweep made its folder and every trial failed on it, one by one
            raise BadInputError(f"{self.root}: the runs folder is a file, not a folder")

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

    def find(self, ref: str | int | os.PathLike) -> RunPaths | None:
        """The run ``ref`` names, or None. See ``resolve`` for what a reference is."""
        try:
            return self.resolve(ref)
        except BadInputError:
            return None

    def resolve(self, ref: str | int | os.PathLike) -> RunPaths:
        """The one run resolver: every command that names a run goes through it.

        ``ref`` is an id (``2``, ``0002``), a name (``digestive``), a folder name of this store
        (``0002-digestive``), or a path (anything with a ``/``, or starting with ``~`` or ``.``)
        that resolves, symlinks and ``..`` followed, to a run folder ``<id>-<name>`` wherever it
        lies: a path to another project's ``runs/0001-exp`` is that folder, never this store's
        ``0001-exp``. A path to a run of this store gives the same RunPaths as its id. Anything
        else is BadInputError (exit 3) with a did-you-mean.
        """
        if isinstance(ref, os.PathLike) or is_path_ref(str(ref)):
            return self._resolve_path(Path(os.fspath(ref)))
        ref = str(ref)
        runs = self.runs()
        for run in runs:
            if ref == run.root.name:
                return run
        if ref.isdigit():
            for run in runs:
                if run.id == int(ref):
                    return run
        else:
            matches = [r for r in runs if r.name == ref]
            if matches:
                return matches[-1]
        names = [r.name for r in runs] + [r.root.name for r in runs]
        raise BadInputError(f"{self.root}: no run '{ref}'{_did_you_mean(ref, names)}")

    def _resolve_path(self, path: Path) -> RunPaths:
        real = Path(os.path.realpath(path.expanduser()))
        if not real.is_dir() or not RUN_DIR_RE.fullmatch(real.name):
            siblings = []
            if real.parent.is_dir():
                siblings = [p.name for p in real.parent.iterdir() if RUN_DIR_RE.fullmatch(p.name)]
            what = "no such folder" if not real.exists() else "not a run folder (<id>-<name>)"
            raise BadInputError(f"{path}: {what}{_did_you_mean(real.name, siblings)}")
        for run in self.runs():  # this store's run, named by path: the same RunPaths as by id
            if os.path.realpath(run.root) == str(real):
                return run
        return RunPaths(real)


def is_path_ref(ref: str) -> bool:
    """A run reference written as a path rather than an id, name or folder name."""
    return "/" in ref or os.sep in ref or ref.startswith(("~", "."))


def _did_you_mean(ref: str, names: list[str]) -> str:
    close = difflib.get_close_matches(ref, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _first_free(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
