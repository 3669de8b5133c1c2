"""Plan and carry out removals: a run's outputs, feature stores, prepared-data caches.

Cleaning is two steps so a user (and ``train --fresh``) can see exactly what goes before it goes:
``plan_*`` lists ``Removal``s with sizes and ages and removes nothing; ``execute`` checks every
path against the allowed roots first and only then removes. Safety rules:

- a path is removed only when its real location (parent resolved, the name itself not followed)
  lies strictly inside one of the allowed roots; the check covers every path before the first
  removal, so a bad plan removes nothing;
- a symlink is unlinked, never followed: neither its target nor, for a link to a folder, the
  folder's contents are touched;
- a folder is renamed to a trash name beside it, then deleted: a crash mid-delete leaves an
  obviously-dead ``.cellbench-trash-*`` folder (cleaned next time), never half a checkpoint folder
  under its real name;
- a folder locked by a live process (a run being trained) is refused (exit 4);
- prepared-data caches are recognised only by a cellbench ``manifest.json``: a folder without one
  (a raw input dataset) is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cellbench.errors import BadInputError, RunConflict
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_holder_alive, read_lock

RUN_KINDS = ("checkpoints", "history", "metrics", "eval", "events", "lr_find", "other")
# ``cellbench clean --run X``: only the weights and training state
CHECKPOINT_KINDS = frozenset({"checkpoints"})
# ``cellbench clean --run X --all``: everything but the resolved config (and the lock)
ALL_RUN_KINDS = frozenset(RUN_KINDS)
# ``cellbench train --run X --fresh``: every output of the old attempt; the event log stays, since
# it is append-only history and the new run_start marks where the fresh attempt begins
FRESH_KINDS = frozenset({"checkpoints", "history", "metrics", "eval", "lr_find"})

TRASH_PREFIX = ".cellbench-trash-"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
# files of a run folder that no kind ever removes
_KEEP = ("config.yaml", "lock")


@dataclass
class Removal:
    path: Path
    kind: str
    bytes: int
    age_s: float  # seconds since the newest file inside was modified

    def to_dict(self) -> dict:
        return {
            "path": os.path.abspath(self.path),
            "kind": self.kind,
            "bytes": self.bytes,
            "age_s": round(self.age_s, 3),
        }


@dataclass
class CleanReport:
    removed: list[Removal] = field(default_factory=list)
    bytes_freed: int = 0

    def to_dict(self) -> dict:
        return {
            "removed": [r.to_dict() for r in self.removed],
            "bytes_freed": self.bytes_freed,
        }


# --- measuring ----------------------------------------------------------------------------------


def _walk_stats(path: Path) -> Iterator[os.stat_result]:
    """lstat of ``path`` and, for a real folder, of everything inside; links are never followed."""
    st = path.lstat()
    yield st
    if not path.is_symlink() and path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            for name in dirnames + filenames:
                try:
                    yield os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # removed while we looked


def measure(path: Path, kind: str, now: float | None = None) -> Removal:
    """A ``Removal`` for ``path``: bytes of the files inside (a link counts as itself), and age."""
    now = time.time() if now is None else now
    size = 0
    newest = 0.0
    for st in _walk_stats(path):
        newest = max(newest, st.st_mtime)
        if not stat.S_ISDIR(st.st_mode):
            size += st.st_size
    return Removal(path=path, kind=kind, bytes=size, age_s=max(0.0, now - newest))


# --- planning -----------------------------------------------------------------------------------


def _check_run_not_locked(run: RunPaths) -> None:
    if _locked_by_other(run.root):
        info = read_lock(run.lock) or {}
        raise RunConflict(
            f"{run.root}: locked by pid {info.get('pid')} on {info.get('host')} "
            "(a live cellbench process is writing this run; stop it first)"
        )


def _locked_by_other(folder: Path) -> bool:
    """True when ``folder/lock`` is held by a live process other than this one."""
    lock = folder / "lock"
    if not lock.exists() or not lock_holder_alive(lock):
        return False
    info = read_lock(lock) or {}
    mine = info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()
    return not mine  # train --fresh cleans the run it has just locked itself


def _run_kind(path: Path, run: RunPaths) -> str | None:
    name = path.name
    if name in _KEEP or name.startswith(".lock") or name.startswith(".ids"):
        return None
    if name.startswith(TRASH_PREFIX):
        return "trash"
    if path == run.checkpoints or (path.suffix in CHECKPOINT_SUFFIXES and not path.is_dir()):
        return "checkpoints"
    if path == run.history:
        return "history"
    if path == run.metrics:
        return "metrics"
    if path == run.eval_dir:
        return "eval"
    if path == run.events:
        return "events"
    if name.startswith("lr_find"):
        return "lr_find"
    return "other"


def plan_run_clean(run: RunPaths, kinds: Iterable[str]) -> list[Removal]:
    """What in ``run`` matches ``kinds`` (see RUN_KINDS), plus leftovers of an interrupted clean.

    Raises BadInputError (exit 3) when the run folder does not exist and RunConflict (exit 4)
    when another live process holds its lock. Removes nothing.
    """
    kinds = set(kinds)
    unknown = kinds - set(RUN_KINDS)
    if unknown:
        raise ValueError(f"unknown clean kinds {sorted(unknown)}; known: {list(RUN_KINDS)}")
    if not run.root.is_dir():
        raise BadInputError(f"{run.root}: no such run folder")
    _check_run_not_locked(run)
    now = time.time()
    removals = []
    for path in sorted(run.root.iterdir()):
        kind = _run_kind(path, run)
        if kind == "trash" or kind in kinds:
            removals.append(measure(path, kind, now))
    return removals


def _feature_root(data_root: Path) -> Path:
    return Path(data_root) / "features"


def plan_features_clean(data_root: str | os.PathLike, tag: str) -> list[Removal]:
    """The feature store ``<data_root>/features/<tag>``; missing -> BadInputError (exit 3)."""
    if not tag or "/" in tag or tag in (".", "..") or os.sep in tag:
        raise BadInputError(f"feature tag '{tag}': a tag is a single folder name")
    store = _feature_root(Path(data_root)) / tag
    if not store.exists() and not store.is_symlink():
        tags = sorted(p.name for p in _feature_root(Path(data_root)).glob("*") if p.is_dir())
        hint = f" (stores: {', '.join(tags)})" if tags else ""
        raise BadInputError(f"{store}: no such feature store{hint}")
    return [measure(store, "features")]


def is_cellbench_manifest(path: Path) -> bool:
    """A ``manifest.json`` written by cellbench (``data prepare``/``synth``/``features extract``).

    Raw datasets may carry their own manifest.json; only one that names cellbench counts.
    """
    try:
        if path.is_symlink() or not path.is_file():
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    for key, value in data.items():
        if key.lower().startswith("cellbench"):
            return True
        if key.lower() in ("producer", "created_by", "generator", "tool", "format") and (
            isinstance(value, str) and value.lower().startswith("cellbench")
        ):
            return True
    return False


def is_cellbench_store(folder: Path) -> bool:
    """A folder cellbench wrote: its own manifest, or every ``fold*`` subfolder has one."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if is_cellbench_manifest(folder / "manifest.json"):
        return True
    folds = [p for p in folder.glob("fold*") if p.is_dir() and not p.is_symlink()]
    return bool(folds) and all(is_cellbench_manifest(p / "manifest.json") for p in folds)


def _find_stores(folder: Path, depth: int) -> Iterator[Path]:
    # Top-down, not following links; a store is taken whole and not descended into.
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if child.name.startswith(TRASH_PREFIX):
            yield child
        elif child.name.startswith("."):
            continue
        elif is_cellbench_store(child):
            yield child
        elif depth > 1:
            yield from _find_stores(child, depth - 1)


def plan_cache_clean(data_root: str | os.PathLike, max_depth: int = 4) -> list[Removal]:
    """Prepared-data caches under ``data_root``: canonical stores and feature stores.

    A cache is a folder with a cellbench ``manifest.json`` (or whose ``fold*`` folders all have
    one); anything else, raw input datasets included, is never listed. Removes nothing.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise BadInputError(f"{data_root}: no such data folder")
    now = time.time()
    removals = []
    for store in _find_stores(data_root, max_depth):
        if store.name.startswith(TRASH_PREFIX):
            kind = "trash"
        elif _feature_root(data_root) in store.parents:
            kind = "features"
        else:
            kind = "cache"
        removals.append(measure(store, kind, now))
    return removals


# --- executing ----------------------------------------------------------------------------------


def _real_location(path: Path) -> Path:
    """Where ``path`` itself lives: its parent resolved, its own name not followed."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(root != path and root in path.parents for root in roots)


def check_removals(removals: Iterable[Removal], allowed_roots: Iterable[os.PathLike]) -> None:
    """Refuse the whole plan if any path is outside the roots, locked, or a non-cellbench cache."""
    roots = [Path(r).resolve() for r in allowed_roots]
    if not roots:
        raise BadInputError("clean: no allowed root given, refusing to remove anything")
    for removal in removals:
        real = _real_location(removal.path)
        if removal.path.name in ("", ".", "..") or not _inside(real, roots):
            raise BadInputError(
                f"{removal.path}: outside the runs and data roots "
                f"({', '.join(map(str, roots))}); refusing to remove anything"
            )
        if _locked_by_other(real.parent) or (
            not removal.path.is_symlink() and removal.path.is_dir() and _locked_by_other(real)
        ):
            raise RunConflict(
                f"{real.parent}: locked by a live cellbench process; refusing to remove {real.name}"
            )
        if removal.kind == "cache" and not is_cellbench_store(removal.path):
            raise BadInputError(
                f"{removal.path}: no cellbench manifest.json (raw data?); refusing to remove it"
            )


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()  # a link goes alone: its target (file or folder) is left as it is
        return
    if path.name.startswith(TRASH_PREFIX):
        shutil.rmtree(path)
        return
    # Rename first (atomic, same folder so same filesystem), then delete: the real name vanishes
    # at once, and a crash halfway leaves only an obviously dead trash folder behind.
    trash = path.with_name(f"{TRASH_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def execute(removals: list[Removal], allowed_roots: list[Path]) -> CleanReport:
    """Remove what ``removals`` lists after checking every path (see ``check_removals``).

    A path that vanished since planning is skipped. Returns what was removed and bytes freed.
    """
    removals = list(removals)
    check_removals(removals, allowed_roots)
    report = CleanReport()
    for removal in removals:
        if not removal.path.exists() and not removal.path.is_symlink():
            continue
        _remove(removal.path)
        report.removed.append(removal)
        report.bytes_freed += removal.bytes
    return report


def plan_runs_clean(runs: Iterable[RunPaths], kinds: Iterable[str]) -> list[Removal]:
    """``plan_run_clean`` over several runs (``clean --sweep S``: its trials' runs); a run that
    is gone already is skipped, one being written refuses the whole plan (exit 4)."""
    kinds = set(kinds)
    removals: list[Removal] = []
    for run in runs:
        if run.root.is_dir():
            removals += plan_run_clean(run, kinds)
    return removals
