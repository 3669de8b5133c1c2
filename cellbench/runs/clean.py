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
  (a raw input dataset) is never touched; from a store, only the files its manifests list go
  (``cellbench.ownership``), and a store folder holding anything else stays, with that content;
- every folder a removal changes is checked writable first: a read-only folder is one error and
  nothing removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cellbench import ownership
from cellbench.errors import BadInputError, RunConflict, UsageError
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

TRASH_PREFIX = ownership.TRASH_PREFIX
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
# files of a run folder that no kind ever removes
_KEEP = ("config.yaml", "lock")


@dataclass
class Removal:
    path: Path
    kind: str
    bytes: int
    age_s: float  # seconds since the newest file inside was modified
    # For a data store: the files cellbench wrote there (what goes), the entries that stay
    # (``kept``), why the folder itself stays (``skipped``), and whether anything goes at all.
    owned: set[Path] | None = None
    kept: list[Path] = field(default_factory=list)
    skipped: str | None = None
    removes: bool = True

    def to_dict(self) -> dict:
        return {
            "path": os.path.abspath(self.path),
            "kind": self.kind,
            "bytes": self.bytes,
            "age_s": round(self.age_s, 3),
        }

    def skip_dict(self) -> dict:
        return {
            "path": os.path.abspath(self.path),
            "kind": self.kind,
            "reason": self.skipped,
            "kept": [os.path.abspath(p) for p in self.kept],
        }


@dataclass
class CleanReport:
    removed: list[Removal] = field(default_factory=list)
    bytes_freed: int = 0
    skipped: list[Removal] = field(default_factory=list)  # folders kept, with the reason

    @classmethod
    def planned(cls, removals: list[Removal]) -> CleanReport:
        """What ``removals`` would do (a dry run)."""
        going = [r for r in removals if r.removes]
        return cls(going, sum(r.bytes for r in going), [r for r in removals if r.skipped])

    def to_dict(self) -> dict:
        return {
            "removed": [r.to_dict() for r in self.removed],
            "bytes_freed": self.bytes_freed,
            "skipped": [r.skip_dict() for r in self.skipped],
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
    if not (run.config.is_file() or run.events.is_file()):
        # a folder named like a run (``2024-taxes``, or one made by hand in runs/) is not one
        # until cellbench wrote its config or events there: nothing in it is cellbench's
        raise BadInputError(
            f"{run.root}: not a cellbench run (no config.yaml or events.jsonl in it); "
            "nothing removed"
        )
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


def check_data_root(data_root: str | os.PathLike) -> Path:
    """``data_root`` as given, or UsageError (exit 2) when it is, once symlinks and ``..`` are
    resolved, the filesystem root, the home folder or a folder above it: a cache scan there
    would walk other users' and other projects' data."""
    data_root = Path(data_root).expanduser()
    real = data_root.resolve()
    if real == Path(real.anchor):
        raise UsageError(f"--data-dir {data_root}: is the filesystem root; name the data folder")
    home = Path.home().resolve()
    if real == home or real in home.parents:
        raise UsageError(
            f"--data-dir {data_root}: is your home folder or above it; name the data folder"
        )
    return data_root


def plan_features_clean(data_root: str | os.PathLike, tag: str) -> list[Removal]:
    """The files of the feature store ``TAG`` that cellbench wrote: ``<data_root>/features/TAG``,
    or ``<store>/features/TAG`` of the one nuclei store under ``data_root`` that has it (where
    ``features extract`` writes). Missing -> BadInputError (exit 3); in several stores ->
    UsageError (exit 2) naming them. Removes nothing."""
    data_root = check_data_root(data_root)
    if not tag or "/" in tag or tag in (".", "..") or os.sep in tag:
        raise BadInputError(f"feature tag '{tag}': a tag is a single folder name")
    roots = [data_root] + [s for s in _find_stores(data_root, 4) if not _is_trash(s)]
    found = [r / "features" / tag for r in roots if os.path.lexists(r / "features" / tag)]
    if not found:
        tags = sorted({p.name for r in roots for p in (r / "features").glob("*") if p.is_dir()})
        hint = f" (stores: {', '.join(tags)})" if tags else ""
        raise BadInputError(f"{_feature_root(data_root) / tag}: no such feature store{hint}")
    if len(found) > 1:
        raise UsageError(
            f"feature tag '{tag}' is in several stores ({', '.join(map(str, found))}); "
            "pass the one to clean as --data-dir"
        )
    store = found[0]
    if store.is_symlink():
        return [measure(store, "features")]  # the link goes, never what it points to
    if not store.is_dir():
        return [_skip(store, "features", "not a folder")]
    return [plan_store(store, "features", unfinished_ok=True)]


def _is_trash(path: Path) -> bool:
    return path.name.startswith(TRASH_PREFIX)


# kept for callers of the old name; the rule now lives in cellbench.ownership
is_cellbench_manifest = ownership.is_cellbench_manifest
is_cellbench_store = ownership.is_store_folder


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

    A cache is a folder with a cellbench ``manifest.json`` (or in its ``fold<k>/`` folders); only
    the files those manifests list are planned, and a store holding anything else is kept (see
    ``plan_store``). Raw input datasets are never listed. Removes nothing.
    """
    data_root = check_data_root(data_root)
    if not data_root.is_dir():
        raise BadInputError(f"{data_root}: no such data folder")
    now = time.time()
    removals = []
    for store in _find_stores(data_root, max_depth):
        if store.name.startswith(TRASH_PREFIX):
            removals.append(measure(store, "trash", now))
        else:
            kind = "features" if store.parent.name == ownership.FEATURES_DIR else "cache"
            removals.append(plan_store(store, kind, now))
    return removals


def _skip(path: Path, kind: str, reason: str) -> Removal:
    return Removal(path=path, kind=kind, bytes=0, age_s=0.0, removes=False, skipped=reason)


def plan_store(
    store: Path, kind: str, now: float | None = None, unfinished_ok: bool = False
) -> Removal:
    """A store's owned files (``cellbench.ownership``) as one Removal.

    A store holding anything else keeps its folder and those items (``kept``, ``skipped`` says
    why); a store a live process is writing, or whose manifest is not cellbench's, is skipped
    whole. ``unfinished_ok`` (``--features TAG``, named by the user): a store without any
    manifest yet, as an interrupted extraction leaves it, owns its contract files.
    """
    now = time.time() if now is None else now
    store = Path(os.path.abspath(store))  # ownership and survey speak in absolute paths
    legacy = "features" if kind == "features" else "store"
    owned = ownership.owned_files(store, legacy)
    if owned is None:
        manifests = [store / ownership.MANIFEST] + [
            p / ownership.MANIFEST for p in ownership.fold_children(store)
        ]
        if unfinished_ok and not any(os.path.lexists(m) for m in manifests):
            owned = ownership.contract_files(store, legacy)
        else:
            _, why = ownership.read_manifest(store / ownership.MANIFEST)
            return _skip(store, kind, f"{why}: not a cellbench store, nothing removed")
    found = ownership.survey(store, owned)
    if found.busy:
        names = ", ".join(p.name for p in found.busy)
        return _skip(store, kind, f"being written by a live cellbench process ({names})")
    if not found.owned:
        return _skip(store, kind, "holds no file cellbench wrote, nothing removed")
    removal = Removal(store, kind, found.bytes, max(0.0, now - found.newest), owned=owned)
    if found.foreign:
        removal.kept = found.foreign
        removal.skipped = _kept_reason(store, found.foreign)
    return removal


def _kept_reason(store: Path, foreign: list[Path]) -> str:
    names = [str(p.relative_to(store)) + ("/" if p.is_dir() else "") for p in foreign[:3]]
    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
    return (
        f"holds {len(foreign)} item(s) cellbench did not write ({', '.join(names)}{more}): "
        "only cellbench's files are removed, the folder and those items stay"
    )


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
        # a store planned with its ownership is surveyed again when removed (another clean may
        # have taken its manifests meanwhile); one planned without must be a store now
        if (
            removal.kind == "cache"
            and removal.owned is None
            and not is_cellbench_store(removal.path)
        ):
            raise BadInputError(
                f"{removal.path}: no cellbench manifest.json (raw data?); refusing to remove it"
            )


def _gone_already(function, path, exc_info) -> None:
    """rmtree's error hook: an entry another clean removed first is fine, anything else raises."""
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def _remove(path: Path) -> None:
    """Remove one entry; one that vanished meanwhile (a second clean at once) is no error."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()  # a link goes alone: its target (file or folder) is left as it is
            return
        if path.name.startswith(TRASH_PREFIX):
            shutil.rmtree(path, onerror=_gone_already)
            return
        # Rename first (atomic, same folder so same filesystem), then delete: the real name
        # vanishes at once, and a crash halfway leaves only an obviously dead trash folder.
        trash = path.with_name(f"{TRASH_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, onerror=_gone_already)


def _store_survey(removal: Removal) -> ownership.Survey | None:
    """The store as it is now, against the ownership planned (it may have changed since)."""
    if removal.owned is None:
        return None
    return ownership.survey(removal.path, removal.owned)


def _dirs_changed(removal: Removal) -> set[Path]:
    """Every folder whose entries removing ``removal`` changes (they must be writable)."""
    found = _store_survey(removal)
    if found is None:
        targets, whole = [removal.path], True
    else:
        targets, whole = found.owned, found.fully_owned
    dirs = {removal.path.parent} if whole else set()
    for target in targets:
        dirs.update(p for p in target.parents if p == removal.path or removal.path in p.parents)
        if not target.is_symlink() and target.is_dir():
            dirs.add(target)
            dirs.update(Path(d) for d, _, _ in os.walk(target))
    return dirs


def _check_writable(removals: list[Removal]) -> None:
    for removal in removals:
        for folder in sorted(_dirs_changed(removal)):
            # (a folder gone meanwhile, taken by another clean, is no obstacle)
            if not os.access(folder, os.W_OK | os.X_OK) and os.path.lexists(folder):
                raise BadInputError(
                    f"{folder}: read-only folder, cannot remove {removal.path.name}; "
                    "nothing removed"
                )


def _remove_store(removal: Removal) -> Removal:
    """Remove a store's owned files; the folder goes too when nothing else is in it. Returns
    what happened, measured again (the store may have changed since it was planned)."""
    found = _store_survey(removal)
    done = Removal(removal.path, removal.kind, found.bytes, removal.age_s, owned=removal.owned)
    if found.busy or not found.owned:
        done.removes = False
        done.skipped = "changed since it was planned (being written, or cleaned by another clean)"
        return done
    if found.fully_owned:
        _remove(removal.path)
        return done
    done.kept, done.skipped = found.foreign, _kept_reason(removal.path, found.foreign)
    holders = {removal.path}  # folders that hold something of the user's: they stay
    for path in found.foreign:
        holders.update(p for p in path.parents if removal.path in p.parents)
    _remove_owned_in(removal.path, found.owned, holders)
    return done


def _remove_owned_in(folder: Path, owned: list[Path], holders: set[Path]) -> None:
    """Remove ``owned`` entries under ``folder`` (which stays): a sub-folder without anything
    of the user's goes whole (trash rename, as ``_remove``), the others entry by entry, each
    folder's manifest last so an interrupted clean leaves it listing what remains."""
    here = [p for p in owned if p.parent == folder]
    subfolders = sorted({folder / p.relative_to(folder).parts[0] for p in owned} - set(here))
    for sub in subfolders:
        if sub in holders:
            _remove_owned_in(sub, [p for p in owned if sub in p.parents], holders)
        else:
            _remove(sub)
    for path in sorted(here, key=lambda p: p.name == ownership.MANIFEST):
        _remove(path)


DATA_KINDS = ("cache", "features")


def _with_ownership(removal: Removal) -> Removal:
    """A data-store removal built without ownership (``measure``) is planned again: whatever
    built the plan, only the files cellbench wrote are ever removed from a store."""
    path = removal.path
    if removal.kind not in DATA_KINDS or removal.owned is not None or not removal.removes:
        return removal
    if path.is_symlink() or not path.is_dir():
        return removal
    if removal.kind == "cache" and not is_cellbench_store(path):
        return removal  # refused by check_removals, naming the folder
    return plan_store(path, removal.kind, unfinished_ok=removal.kind == "features")


def execute(removals: list[Removal], allowed_roots: list[Path]) -> CleanReport:
    """Remove what ``removals`` lists after checking every path (see ``check_removals``) and
    that every folder it changes is writable.

    A path that vanished since planning is skipped. Returns what was removed, bytes freed, and
    the folders kept with the reason.
    """
    removals = [_with_ownership(r) for r in removals]
    check_removals([r for r in removals if r.removes], allowed_roots)
    _check_writable([r for r in removals if r.removes])
    report = CleanReport()
    for removal in removals:
        if not removal.removes:
            report.skipped.append(removal)
            continue
        if not removal.path.exists() and not removal.path.is_symlink():
            continue
        if removal.owned is not None and not removal.path.is_symlink():
            removal = _remove_store(removal)
            if removal.skipped:
                report.skipped.append(removal)
            if not removal.removes:
                continue
        else:
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
