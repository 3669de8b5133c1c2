"""Output files a command writes at a path the user chose, and which existing files it may replace.

The scheme (docs/outputs.md): every file written through this module is listed in a ledger,
``.cellbench-outputs.json``, in its own folder, with its size and sha256. One scheme for every
format (GeoJSON, PNG, CSV...), and it needs nothing inside the file, so a CSV stays a plain CSV
and a PNG stays a plain PNG. Before writing, ``check`` decides:

- a path that does not exist is written;
- an existing file is replaced only when the ledger lists it with the same size and sha256:
  cellbench wrote it and nobody changed it since. A file the user made, or a cellbench output
  the user edited afterwards (a GeoJSON corrected in QuPath), is refused (exit 4, naming the
  file) unless ``overwrite`` (the command's ``--overwrite``);
- a folder, a symlink or anything not a plain file at the path is refused, ``--overwrite`` or not;
- nothing is ever written inside a data store, a feature store, a generated raw dataset, a sweep
  folder, or among a run's own files (its root, ``checkpoints/``, ``eval/``): those folders
  belong to the command that made them (``clean`` relies on their manifests), ``--overwrite``
  or not. A run's ``predict/`` folder (``predict``'s default) and other sub-folders are fine.

A crash between the write and the ledger update leaves an unlisted file: the next run refuses
it (the safe side) until ``--overwrite``. Ledger updates of concurrent commands writing into one
folder are serialised by an advisory lock on the folder itself (no extra file).

Folder outputs (``eval --export``, ``data prepare``/``synth``) carry their own marker file
(``export.json``, ``manifest.json``, ``synth.json``) and replace a folder only when it holds
nothing else; they use ``check_location`` for the "never inside" rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cellbench.atomic import atomic_write, atomic_write_text
from cellbench.errors import RunConflict

LEDGER = ".cellbench-outputs.json"
FORMAT = "cellbench-outputs"
# markers of the folders cellbench owns whole: a store's (and feature store's) manifest.json,
# data synth's synth.json, the shapes dataset's shapes.json, a sweep's spec.yaml + state.json
_RUN_OWN_DIRS = ("checkpoints", "eval")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cellbench_json(path: Path) -> bool:
    from cellbench.ownership import is_cellbench_data, read_manifest

    if path.name == "manifest.json":
        return read_manifest(path)[0] is not None
    try:
        if path.stat().st_size > 2**20:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and (
        is_cellbench_data(data) or str(data.get("generator", "")).startswith("cellbench")
    )


def _owner(folder: Path) -> str | None:
    """What cellbench folder ``folder`` is ("data store", "run" ...), or None."""
    from cellbench.runs.layout import RUN_DIR_RE

    if (folder / "manifest.json").is_file() and _cellbench_json(folder / "manifest.json"):
        return "feature store" if folder.parent.parent.name == "features" else "data store"
    for marker, kind in (("synth.json", "generated dataset"), ("shapes.json", "dataset")):
        if (folder / marker).is_file() and _cellbench_json(folder / marker):
            return kind
    if (folder / "spec.yaml").is_file() and (folder / "state.json").is_file():
        return "sweep folder"
    if RUN_DIR_RE.fullmatch(folder.name) and (
        (folder / "events.jsonl").is_file() or (folder / "config.yaml").is_file()
    ):
        return "run"
    return None


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """``folder`` or the first of its parents that exists and is not a folder (a file where a
    folder must go), else None: the folder cannot be made there, and ``mkdir`` would only say
    "File exists" or "Not a directory"."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def check_location(path: str | os.PathLike, option: str) -> None:
    """Refuse (exit 4) a ``path`` inside a store, a generated dataset, a sweep folder or among a
    run's own files. Symlinked folders are followed: the real place counts."""
    real = Path(os.path.realpath(path))
    for depth, folder in enumerate(real.parents):
        kind = _owner(folder)
        if kind is None:
            continue
        if kind == "run":
            inside = real.relative_to(folder).parts
            if depth > 0 and inside[0] not in _RUN_OWN_DIRS:
                continue  # a sub-folder of its own (predict/): the user's outputs
            raise RunConflict(
                f"{option} {path}: inside the run {folder} among its own files; cellbench never "
                "writes an output there (choose another path)"
            )
        raise RunConflict(
            f"{option} {path}: inside the {kind} {folder}; cellbench never writes an output "
            "there (choose another path)"
        )
    if real.name == LEDGER:
        raise RunConflict(f"{option} {path}: that name is cellbench's output ledger")


def _read_ledger(folder: Path) -> dict[str, Any] | None:
    """The folder's ledger ``{"format": ..., "files": {name: {"size", "sha256"}}}``, None when
    absent. A file of that name that is not ours is refused, never replaced."""
    path = folder / LEDGER
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or path.stat().st_size > 16 * 2**20:
            raise ValueError
        # NaN/Infinity are no JSON cellbench writes (it could not write them back)
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError
        files = data.get("files")
        if not isinstance(files, dict) or not all(_entry_ok(e) for e in files.values()):
            raise ValueError
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise RunConflict(
            f"{path}: not a cellbench output ledger; cellbench will not replace it (move it)"
        ) from None
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _entry_ok(entry: Any) -> bool:
    """A ledger entry as ``record`` writes it: ``{"size": int, "sha256": str}``."""
    return (
        isinstance(entry, dict)
        and type(entry.get("size")) is int
        and isinstance(entry.get("sha256"), str)
    )


def check_ledger(folder: str | os.PathLike) -> None:
    """Refuse (exit 4) a ledger file in ``folder`` that is not cellbench's, before any work (it
    is read otherwise only once an output is there to replace)."""
    _read_ledger(Path(folder))


def listed_size(path: str | os.PathLike) -> int | None:
    """The size the folder's ledger lists for ``path`` (None: not listed)."""
    path = Path(path)
    entry = (_read_ledger(path.parent) or {}).get("files", {}).get(path.name)
    return entry["size"] if entry else None


def written_by_cellbench(path: str | os.PathLike) -> bool:
    """``path`` is listed in its folder's ledger with its current size and sha256."""
    path = Path(path)
    ledger = _read_ledger(path.parent)
    entry = (ledger or {}).get("files", {}).get(path.name)
    if not isinstance(entry, dict):
        return False
    try:
        if path.is_symlink() or path.stat().st_size != entry.get("size"):
            return False
        return _sha256(path) == entry.get("sha256")
    except OSError:
        return False


def check(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--out") -> Path:
    """Whether ``path`` may be written now (see the module doc); raises RunConflict if not."""
    path = Path(path)
    check_location(path, option)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a symlink" if path.is_symlink() else "a folder" if path.is_dir() else "not a file"
        raise RunConflict(f"{option} {path}: is {what}; cellbench replaces only plain files")
    if path.exists() and not overwrite and not written_by_cellbench(path):
        raise RunConflict(
            f"{path}: exists and was not written by cellbench (or was changed since); "
            f"not replaced — choose another {option} or add --overwrite"
        )
    return path


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An advisory lock on the folder itself: one ledger update at a time."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; updates are still atomic
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def record(path: str | os.PathLike) -> None:
    """List ``path`` (just written) in its folder's ledger with its size and sha256."""
    path = Path(path)
    folder = path.parent
    with _folder_lock(folder):
        ledger = _read_ledger(folder) or {"format": FORMAT, "files": {}}
        ledger["files"][path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        ledger["files"] = dict(sorted(ledger["files"].items()))
        atomic_write_text(folder / LEDGER, json.dumps(ledger, indent=1, allow_nan=False) + "\n")


def write(
    path: str | os.PathLike,
    writer: Callable[[Any], None],
    *,
    overwrite: bool = False,
    option: str = "--out",
    mode: str = "wb",
) -> Path:
    """``check``, then ``atomic_write(path, writer, mode)``, then ``record``."""
    path = check(path, overwrite=overwrite, option=option)
    atomic_write(path, writer, mode=mode)
    record(path)
    return path


def write_bytes(path: str | os.PathLike, data: bytes, **kwargs: Any) -> Path:
    return write(path, lambda fh: fh.write(data), **kwargs)


def write_text(path: str | os.PathLike, text: str, **kwargs: Any) -> Path:
    return write(path, lambda fh: fh.write(text), mode="w", **kwargs)
