"""Which files of a folder cellbench wrote: the ``"files"`` list of its manifest.

Every manifest cellbench writes for a data folder (a canonical store's root and each
``fold<k>/``, a feature store's root and each ``fold<k>/``, the ``synth.json`` of generated raw
data) carries ``"files"``: the sorted paths, relative to the manifest's folder, of the files
cellbench wrote there (the manifest itself is implied). That list is the whole of what ``clean``
may remove and what ``prepare``/``synth`` may replace; anything else in the folder is the user's.

Rules that keep a hostile or broken manifest from reaching outside its folder:

- an entry counts only when it is a plain relative path strictly inside the folder: absolute
  paths, ``..``, empty or non-string entries are ignored, and so is an entry reached through a
  symlinked folder (its real location must be the folder's real location plus the entry);
- a manifest that is not JSON, not an object, or not cellbench's makes the folder foreign;
- a manifest written before ``"files"`` existed owns the contract files of its kind
  (``STORE_FOLD_FILES`` / ``FEATURE_FOLD_FILES`` in each ``fold<k>/``, nothing but itself at
  the root), never anything else.

A nuclei store owns its feature stores too (``<store>/features/<tag>/``, each with its own
manifests). ``survey(folder, owned)`` sorts what a store folder holds into owned files, foreign
entries (the user's) and entries a live cellbench process is still writing (a staging folder of
a live pid, a feature tag's held ``lock``); ``runs.clean`` removes from that.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cellbench.runs.lock import lock_holder_alive, pid_alive

MANIFEST = "manifest.json"
FILES_KEY = "files"
MAX_MANIFEST_BYTES = 16 * 2**20
# The canonical store contract (DESIGN.md): what a fold of a store written before "files" owns.
STORE_FOLD_FILES = frozenset(
    {"images.npy", "inst.npy", "types.npy", "hv.npy", "tissues.json", MANIFEST}
)
# The feature store contract: <data>/features/<tag>/fold<k>/{cls.npy, tokens.npy, manifest.json}
FEATURE_FOLD_FILES = frozenset({"cls.npy", "tokens.npy", "tissues.json", MANIFEST})
FEATURES_DIR = "features"  # feature stores live in <nuclei store>/features/<tag>/
LOCK = "lock"  # a feature tag's extraction lock (cellbench.runs.lock format)
KIND_FOLD_FILES = {"store": STORE_FOLD_FILES, "features": FEATURE_FOLD_FILES}

FOLD_RE = re.compile(r"fold\d+")
# Leftovers of cellbench's own writes: staging folders of ``data.staging`` (".fold1.tmp-<pid>",
# ".fold1.old-<pid>") and temp files of ``atomic`` (".<name>.<mkstemp suffix>.tmp").
STAGING_RE = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)")
ATOMIC_TMP_RE = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
TRASH_PREFIX = ".cellbench-trash-"


# --- writing ------------------------------------------------------------------------------------


def files_entry(folder: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> list[str]:
    """The ``"files"`` value for ``paths`` written in ``folder``: sorted, relative, POSIX.

    Raises ValueError for a path outside ``folder`` (a writer bug, never user input).
    """
    folder = Path(os.path.abspath(folder))
    entries = set()
    for path in paths:
        path = Path(os.path.abspath(folder / path))
        rel = path.relative_to(folder)  # ValueError when outside
        if rel == Path("."):
            raise ValueError(f"{path}: a manifest lists files, not its own folder")
        entries.add(rel.as_posix())
    entries.discard(MANIFEST)
    return sorted(entries)


def written_files(folder: str | os.PathLike, manifest: str = MANIFEST) -> list[str]:
    """``files_entry`` of every file under ``folder``: for a staging folder only cellbench wrote
    into (``prepare`` builds each fold in one), so the listing is exactly what it wrote."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            if not ATOMIC_TMP_RE.fullmatch(name) and not (
                dirpath == str(folder) and name == manifest
            ):
                found.append(Path(dirpath) / name)
    return files_entry(folder, found)


# --- reading ------------------------------------------------------------------------------------


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` for a cellbench manifest; ``(None, why not)`` otherwise."""
    try:
        if path.is_symlink():
            return None, f"{path.name} is a symlink"
        if path.stat().st_size > MAX_MANIFEST_BYTES:  # a user's big file is never read whole
            return None, f"{path.name} is too large to be a cellbench manifest"
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} unreadable ({getattr(exc, 'strerror', None) or exc})"
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"{path.name} is not JSON"
    if not isinstance(data, dict) or not is_cellbench_data(data):
        return None, f"{path.name} was not written by cellbench"
    return data, None


def is_cellbench_data(data: dict) -> bool:
    """A manifest's content names cellbench (a ``cellbench_*`` key, or a producer/format value
    starting with cellbench): raw datasets may carry a manifest.json of their own."""
    for key, value in data.items():
        if key.lower().startswith("cellbench"):
            return True
        if key.lower() in ("producer", "created_by", "generator", "tool", "format") and (
            isinstance(value, str) and value.lower().startswith("cellbench")
        ):
            return True
    return False


def is_cellbench_manifest(path: Path) -> bool:
    return read_manifest(Path(path))[0] is not None


def _safe_entry(entry: Any) -> PurePosixPath | None:
    """A manifest entry as a relative path strictly inside its folder, or None."""
    if not isinstance(entry, str) or not entry or "\0" in entry or "\\" in entry:
        return None
    rel = PurePosixPath(entry)
    if rel.is_absolute() or any(part in ("..", ".", "") for part in entry.split("/")):
        return None
    return rel


def _inside_really(folder: Path, rel: PurePosixPath) -> bool:
    """``folder/rel``'s parent is really ``folder``'s (no symlinked folder on the way)."""
    real_parent = os.path.realpath(folder.joinpath(*rel.parts[:-1]))
    return real_parent == os.path.join(os.path.realpath(folder), *rel.parts[:-1]).rstrip(os.sep)


def listed_files(folder: Path, manifest: dict[str, Any], legacy: Iterable[str]) -> set[Path]:
    """The files ``manifest`` (found in ``folder``) owns, as absolute paths, itself excluded."""
    entries = manifest.get(FILES_KEY)
    if not isinstance(entries, list):
        entries = sorted(legacy)  # written before "files": the contract files, nothing else
    owned = set()
    for entry in entries:
        rel = _safe_entry(entry)
        if rel is not None and _inside_really(folder, rel):
            owned.add(Path(os.path.abspath(folder.joinpath(*rel.parts))))
    return owned


def owned_files(
    folder: str | os.PathLike, kind: str = "store", manifest_name: str = MANIFEST
) -> set[Path] | None:
    """Every file of the store ``folder`` that cellbench wrote (absolute paths, manifests
    included): those its manifest lists, and those of each ``fold<k>/`` with a manifest of its
    own. None when neither the folder nor any ``fold<k>/`` holds a cellbench manifest."""
    folder = Path(os.path.abspath(folder))
    fold_files = KIND_FOLD_FILES.get(kind, frozenset({MANIFEST}))
    owned: set[Path] = set()
    found = False
    manifest, _ = read_manifest(folder / manifest_name)
    if manifest is not None:
        found = True
        # a fold folder asked about on its own (prepare replacing it) has the fold's contract
        legacy = fold_files if FOLD_RE.fullmatch(folder.name) else ()
        owned |= {folder / manifest_name, *listed_files(folder, manifest, legacy)}
        if not isinstance(manifest.get(FILES_KEY), list) and kind in KIND_FOLD_FILES:
            owned |= contract_files(folder, kind)  # written before "files": the contract's
    for child in fold_children(folder):
        fold_manifest, _ = read_manifest(child / MANIFEST)
        if fold_manifest is not None:
            found = True
            owned |= {child / MANIFEST, *listed_files(child, fold_manifest, fold_files)}
    if kind == "store":  # its feature stores are cellbench's too (features extract wrote them)
        for tag in _real_subfolders(folder / FEATURES_DIR):
            owned |= owned_files(tag, "features") or set()
    return owned if found else None


def contract_files(folder: str | os.PathLike, kind: str) -> set[Path]:
    """The contract file names of ``kind`` in each ``fold<k>/`` and the root manifest: what a
    store without any manifest yet (an interrupted extraction) may own, nothing else."""
    folder = Path(os.path.abspath(folder))
    owned = {folder / MANIFEST}
    for child in fold_children(folder):
        owned |= {child / name for name in KIND_FOLD_FILES[kind]}
    return owned


def fold_children(folder: Path) -> list[Path]:
    return [p for p in _real_subfolders(folder) if FOLD_RE.fullmatch(p.name)]


def _real_subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder``, links not followed (none when it is not a real folder)."""
    if os.path.islink(folder):
        return []
    try:
        children = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(Path(e.path) for e in children if e.is_dir(follow_symlinks=False))


def is_store_folder(folder: str | os.PathLike) -> bool:
    """A folder with a cellbench manifest at its top or in a ``fold<k>/`` (not a symlink)."""
    folder = Path(folder)
    return not folder.is_symlink() and folder.is_dir() and owned_files(folder) is not None


# --- surveying ----------------------------------------------------------------------------------


@dataclass
class Survey:
    """What a store folder holds: ``owned`` files (and dead leftovers of cellbench's writes),
    ``foreign`` entries (top-most: a folder holding nothing of ours is one entry) and ``busy``
    staging folders of live processes. ``bytes``/``newest`` measure the owned files."""

    root: Path
    owned: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    bytes: int = 0
    newest: float = 0.0

    @property
    def fully_owned(self) -> bool:
        return not self.foreign and not self.busy


def _is_leftover(path: Path, owned_names: set[str]) -> tuple[bool, bool]:
    """``(is a leftover of our writes, its writer is alive)`` for a folder entry."""
    name = path.name
    if name.startswith(TRASH_PREFIX):
        return True, False
    if path.parent.parent.name == FEATURES_DIR and (name == LOCK or name.startswith(".lock.")):
        # a feature tag's extraction lock: held by a live extract (busy), or left by a dead one
        return True, name == LOCK and lock_holder_alive(path)
    staging = STAGING_RE.fullmatch(name)
    if staging and (staging["name"] in owned_names or FOLD_RE.fullmatch(staging["name"])):
        return True, pid_alive(int(staging["pid"]))
    tmp = ATOMIC_TMP_RE.fullmatch(name)
    if tmp and tmp["name"] in owned_names:
        return True, False
    return False, False


def survey(folder: str | os.PathLike, owned: set[Path]) -> Survey:
    """Sort everything under ``folder`` against ``owned`` (from ``owned_files``). Links are
    entries of their own, never followed."""
    result = Survey(Path(os.path.abspath(folder)))
    # folders on the way to an owned file: the only ones worth walking into (a raw dataset of a
    # million images inside a store folder is one foreign entry, not a million lstat calls)
    on_the_way = {parent for path in owned for parent in path.parents}
    _survey_dir(result.root, owned, on_the_way, result)
    return result


def _survey_dir(folder: Path, owned: set[Path], on_the_way: set[Path], result: Survey) -> bool:
    """Add ``folder``'s entries to ``result``; True when it holds anything of ours."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        result.foreign.append(folder)  # unreadable: we cannot know it holds only our files
        return False
    names_owned = {p.name for p in owned if p.parent == folder}
    ours = False
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we looked (another clean)
        leftover, alive = _is_leftover(path, names_owned)
        if path in owned and not entry.is_dir(follow_symlinks=False):
            result.owned.append(path)
            result.bytes += st.st_size
            result.newest = max(result.newest, st.st_mtime)
            ours = True
        elif leftover:
            (result.busy if alive else result.owned).append(path)
            ours = True
        elif entry.is_dir(follow_symlinks=False) and path in on_the_way:
            before = len(result.foreign)
            if _survey_dir(path, owned, on_the_way, result):
                ours = True
            else:  # nothing of ours inside: one foreign entry for the whole folder
                del result.foreign[before:]
                result.foreign.append(path)
        else:
            result.foreign.append(path)
    return ours
