"""The stores a workspace holds, and how healthy they are: data stores (``data prepare``) and
feature stores (``features extract``) found under its data folder.

Finding and judging them reads manifests only (numpy, no torch), so ``cellbench status`` stays
quick; the preprocessing check that needs the backbone profile is ``full=True`` (training).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_DEPTH = 4  # data/quickstart/pannuke/features/vit-demo: deep enough, bounded on big trees


def folder_bytes(path: Path) -> int:
    """Bytes of the files below ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _walk(root: Path, depth: int = MAX_DEPTH):
    """Folders below ``root`` (itself included) down to ``depth`` levels, sorted."""
    if not root.is_dir():
        return
    stack = [(root, 0)]
    while stack:
        folder, level = stack.pop()
        yield folder
        if level >= depth:
            continue
        try:
            children = sorted(
                (p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True
            )
        except OSError:
            continue
        stack += [(c, level + 1) for c in children]


def find_data_stores(data_root: Path) -> list[Path]:
    """Canonical stores (``data prepare``) below ``data_root``; a store's own folders (its
    folds, its features) are not stores of their own."""
    from cellbench.data.store import is_store

    found: list[Path] = []
    for p in _walk(data_root):
        if any(s == p or s in p.parents for s in found) or p.name == "features":
            continue
        if is_store(p):
            found.append(p)
    return found


def find_feature_stores(data_root: Path) -> list[Path]:
    from cellbench.features.store import read_manifest

    found = []
    for folder in _walk(data_root, MAX_DEPTH + 2):
        if folder.parent.name != "features":
            continue
        try:
            if read_manifest(folder / "manifest.json") is not None:
                found.append(folder)
        except Exception:  # an unreadable manifest: not a store we can offer
            continue
    return found


@dataclass
class StoreHealth:
    path: Path
    kind: str  # "data" or "features"
    tiles: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    backbone: str | None = None  # feature stores: what extract was given

    @property
    def stale(self) -> bool:
        return bool(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "tiles": self.tiles,
            "bytes": self.bytes,
            "stale": self.stale,
            "problems": self.problems,
            "backbone": self.backbone,
        }


def data_store_health(path: Path) -> StoreHealth:
    from cellbench.data.store import fold_dir, read_json, store_folds
    from cellbench.errors import BadInputError

    # its features/ are feature stores, counted on their own
    health = StoreHealth(path, "data", bytes=folder_bytes(path) - folder_bytes(path / "features"))
    for k in store_folds(path):
        try:
            health.tiles += int(read_json(fold_dir(path, k) / "manifest.json").get("tiles") or 0)
        except (BadInputError, ValueError, TypeError):
            health.problems.append(f"fold {k}: unreadable manifest")
    return health


def backbone_name(manifest: dict[str, Any]) -> str | None:
    backbone = manifest.get("backbone") or {}
    source = str(backbone.get("profile") or "")
    if source.startswith("shipped:"):
        return source[len("shipped:") :]
    return backbone.get("name") or source or None


def feature_store_health(path: Path, full: bool = False) -> StoreHealth:
    """Tiles, size and why the store is unusable (incomplete, source changed or gone; with
    ``full`` also a changed preprocessing, which loads the backbone profile)."""
    from cellbench.features.store import (
        file_sha256,
        fold_numbers,
        fold_path,
        preprocessing_now,
        read_manifest,
        source_manifest,
        staleness,
    )

    health = StoreHealth(path, "features")
    manifest = read_manifest(path / "manifest.json") if path.is_dir() else None
    if manifest is None:
        health.problems.append("not a feature store (no manifest.json)")
        return health
    health.bytes = folder_bytes(path)
    health.backbone = backbone_name(manifest)
    prep = preprocessing_now(manifest) if full else None
    folds = fold_numbers(path)
    if not folds:
        health.problems.append("no extracted fold")
    for k in folds:
        folder = fold_path(path, k)
        fm = read_manifest(folder / "manifest.json") or {}
        health.tiles += int(fm.get("done") or 0)
        if not fm.get("complete"):
            health.problems.append(f"fold {k} extraction incomplete")
        elif full:
            health.problems += staleness(fm, prep, folder)
        else:
            source = source_manifest(folder, k)
            sha = file_sha256(source)
            if sha is None:
                health.problems.append(f"source fold {k} is gone ({source})")
            elif sha != (fm.get("source") or {}).get("manifest_sha256"):
                health.problems.append(f"source fold {k} changed since extraction (re-prepared?)")
    return health
