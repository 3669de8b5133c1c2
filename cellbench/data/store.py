"""The canonical nuclei store: one format for prepared PanNuke and generated data.

    <root>/manifest.json              summary of the folds (rebuilt after every prepare)
    <root>/fold<k>/images.npy         uint8   (N, H, W, 3)
    <root>/fold<k>/inst.npy           int32   (N, H, W)     ids 1..K per tile, 0 = none
    <root>/fold<k>/types.npy          uint8   (N, H, W)     0 = background, 1..5 = NUCLEUS_TYPES
    <root>/fold<k>/hv.npy             float32 (N, 2, H, W)  channel 0 = x, 1 = y, in [-1, 1]
    <root>/fold<k>/tissues.json       tissue name of each tile
    <root>/fold<k>/manifest.json      shapes, dtypes, ranges, counts, sources, version

A fold folder is built under a temporary name and renamed when complete, so a ``fold<k>`` with
a ``manifest.json`` is a complete fold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.atomic import atomic_write_json
from cellbench.data.npyio import open_npy
from cellbench.errors import BadInputError

STORE_FORMAT = "cellbench-nuclei-store"
STORE_FORMAT_VERSION = 1
HV_CONVENTION = "exact-centroid"
ARRAY_DTYPES: dict[str, np.dtype] = {
    "images": np.dtype(np.uint8),
    "inst": np.dtype(np.int32),
    "types": np.dtype(np.uint8),
    "hv": np.dtype(np.float32),
}


def fold_dir(root: Path, fold: int) -> Path:
    return Path(root) / f"fold{fold}"


def array_shapes(n: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
    return {"images": (n, h, w, 3), "inst": (n, h, w), "types": (n, h, w), "hv": (n, 2, h, w)}


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable JSON ({exc})") from exc


def store_folds(root: Path) -> list[int]:
    """Folds of a store that are complete (their manifest exists)."""
    root = Path(root)
    if not root.is_dir():
        return []
    folds = []
    for child in root.iterdir():
        is_fold = child.name.startswith("fold") and child.name[4:].isdigit()
        if is_fold and (child / "manifest.json").is_file():
            folds.append(int(child.name[4:]))
    return sorted(folds)


def is_store(root: Path) -> bool:
    root = Path(root)
    if (root / "manifest.json").is_file():
        try:
            return read_json(root / "manifest.json").get("format") == STORE_FORMAT
        except (BadInputError, AttributeError):
            return False
    return any((child / "inst.npy").exists() for child in root.glob("fold*"))


@dataclass
class StoreFold:
    """One fold of the store, arrays memory-mapped read-only."""

    root: Path
    fold: int
    images: np.ndarray
    inst: np.ndarray
    types: np.ndarray
    hv: np.ndarray
    tissues: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def path(self) -> Path:
        return fold_dir(self.root, self.fold)


def _dtype_hint(name: str, dtype: np.dtype) -> str:
    """Why a wrong dtype matters, for the message."""
    if name == "images" and dtype == np.int8:
        return " (int8 wraps values above 127)"
    return " (HV must be float32 in [-1, 1])" if name == "hv" else ""


def fold_contract(folder: Path) -> tuple[dict[str, np.ndarray] | None, list[tuple[str, str]]]:
    """Check one fold folder against the store contract: ``(arrays, problems)``.

    ``problems`` are ``(check name, message naming the file)`` in the order they are found:
    ``incomplete`` (no manifest.json), ``files`` (missing or truncated .npy), ``dtype``,
    ``shape``. ``arrays`` are the memory-mapped (read-only) arrays, or None when a file cannot be
    opened or the shapes disagree; a wrong dtype alone leaves them readable so that ``data check``
    can still look at the values. ``open_fold`` raises on the first problem.
    """
    folder = Path(folder)
    problems: list[tuple[str, str]] = []
    if not (folder / "manifest.json").is_file():
        problems.append(
            ("incomplete", f"{folder}: incomplete fold (no manifest.json); run data prepare again")
        )
    arrays = {}
    for name, dtype in ARRAY_DTYPES.items():
        path = folder / f"{name}.npy"
        try:
            arr = open_npy(path)
        except BadInputError as exc:
            problems.append(("files", str(exc)))
            return None, problems
        if arr.dtype != dtype:
            hint = _dtype_hint(name, arr.dtype)
            problems.append(("dtype", f"{path}: dtype {arr.dtype}, expected {dtype}{hint}"))
        arrays[name] = arr
    inst = arrays["inst"]
    if inst.ndim != 3:
        problems.append(("shape", f"{folder / 'inst.npy'}: shape {inst.shape}, expected (N, H, W)"))
        return None, problems
    shapes_ok = True
    for name, shape in array_shapes(*inst.shape).items():
        if arrays[name].shape != shape:
            path = folder / f"{name}.npy"
            problems.append(("shape", f"{path}: shape {arrays[name].shape}, expected {shape}"))
            shapes_ok = False
    return (arrays if shapes_ok else None), problems


def open_fold(root: Path, fold: int) -> StoreFold:
    """Open a store fold, refusing wrong dtypes or shapes with one line naming the file."""
    folder = fold_dir(root, fold)
    if not folder.is_dir():
        raise BadInputError(f"{folder}: fold {fold} not found in store {root}")
    arrays, problems = fold_contract(folder)
    if problems or arrays is None:
        raise BadInputError(problems[0][1])
    n = len(arrays["inst"])
    tissues = read_json(folder / "tissues.json")
    if not isinstance(tissues, list) or len(tissues) != n:
        raise BadInputError(f"{folder / 'tissues.json'}: expected a list of {n} tissue names")
    return StoreFold(
        root=Path(root),
        fold=fold,
        tissues=[str(t) for t in tissues],
        manifest=read_json(folder / "manifest.json"),
        **arrays,
    )


def create_arrays(folder: Path, n: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Writable memory-mapped .npy files of the right dtype and shape, filled chunk by chunk."""
    return {
        name: np.lib.format.open_memmap(
            folder / f"{name}.npy", mode="w+", dtype=ARRAY_DTYPES[name], shape=shape
        )
        for name, shape in array_shapes(n, h, w).items()
    }


def write_root_manifest(root: Path, version: str) -> dict[str, Any]:
    """Rebuild ``<root>/manifest.json`` from the fold manifests (atomic)."""
    folds = {}
    for fold in store_folds(root):
        m = read_json(fold_dir(root, fold) / "manifest.json")
        folds[str(fold)] = {
            "tiles": m.get("tiles"),
            "size": [m.get("height"), m.get("width")],
            "nuclei": m.get("counts", {}).get("nuclei"),
            "sources": {k: v.get("sha256") for k, v in m.get("sources", {}).items()},
            "created": m.get("created"),
        }
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "cellbench_version": version,
        "hv_convention": HV_CONVENTION,
        "folds": folds,
        # cellbench writes nothing else at the root: each fold<k>/manifest.json lists its files
        "files": [],
    }
    atomic_write_json(Path(root) / "manifest.json", manifest)
    return manifest
