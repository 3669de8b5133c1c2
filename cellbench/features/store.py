"""The feature store: frozen-backbone features of a nuclei store, one folder per tag.

    <store>/features/<tag>/manifest.json          backbone, preprocessing, blocks, folds, files
    <store>/features/<tag>/fold<k>/cls.npy        float16 (N, D)           CLS after the final norm
    <store>/features/<tag>/fold<k>/tokens.npy     float16 (N, L, G, G, D)  raw block outputs
    <store>/features/<tag>/fold<k>/tissues.json   tissue of each tile (copied from the source)
    <store>/features/<tag>/fold<k>/manifest.json  the same identity, the source fold's manifest
                                                  sha256, progress (``complete``, ``done``),
                                                  CLS mean/std and value checks

Every manifest has ``"format": "cellbench-feature-store"`` and ``"files"``: the sorted paths,
relative to the manifest's folder, that cellbench wrote (``clean --features`` removes those and
nothing else). A fold is usable only when its manifest says ``complete``; it is *stale* when the
source fold was re-prepared (its manifest's sha256 changed) or the backbone profile's
preprocessing changed since extraction. ``open_feature_store`` refuses both, and a store whose
values failed (NaN/Inf, constant rows, CLS std outside the profile's range), unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.data.npyio import open_npy
from cellbench.errors import BadInputError

FEATURE_FORMAT = "cellbench-feature-store"
FEATURE_FORMAT_VERSION = 1
FOLD_FILES = ("cls.npy", "manifest.json", "tissues.json", "tokens.npy")
LOCK_NAME = "lock"  # held while a process extracts into the tag; not a store file


def tag_dir(data_root: Path, tag: str) -> Path:
    return Path(data_root) / "features" / tag


def fold_path(tag_root: Path, fold: int) -> Path:
    return Path(tag_root) / f"fold{fold}"


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A feature-store manifest, or None when the file is absent or not ours."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        # `features check data/manifest.json`, `--features some.npy`: a file given for the store
        folder = Path(path).parent
        raise BadInputError(f"{folder}: a file, not a feature store folder") from exc
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FEATURE_FORMAT:
        return None
    return data


def fold_numbers(tag_root: Path) -> list[int]:
    """Folds that have a feature-store manifest (complete or not)."""
    out = []
    for child in Path(tag_root).glob("fold*"):
        if child.name[4:].isdigit() and read_manifest(child / "manifest.json") is not None:
            out.append(int(child.name[4:]))
    return sorted(out)


def preprocessing_now(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The preprocessing the manifest's backbone profile gives today (None: profile gone)."""
    from cellbench.errors import CellbenchError
    from cellbench.models.backbones import load_backbone_profile

    backbone = manifest.get("backbone") or {}
    source = str(backbone.get("profile") or "")
    name = source[len("shipped:") :] if source.startswith("shipped:") else source
    if source == "timm":
        name = backbone.get("name", "")
    try:
        return load_backbone_profile(name).preprocessing()
    except CellbenchError:
        return None


def source_manifest(feature_fold: Path, fold: int) -> Path:
    """The source fold's manifest: ``<store>/fold<k>/manifest.json`` for features in
    ``<store>/features/<tag>/fold<k>``, so a store moved or copied whole stays consistent."""
    return Path(feature_fold).parent.parent.parent / f"fold{fold}" / "manifest.json"


def staleness(
    fold_manifest: dict[str, Any], current_prep: dict[str, Any] | None, feature_fold: Path
) -> list[str]:
    """Why a fold's features no longer describe their source (empty: they do)."""
    reasons = []
    source = fold_manifest.get("source") or {}
    fold = fold_manifest.get("fold")
    path = source_manifest(feature_fold, fold)
    sha = file_sha256(path)
    if sha is None:
        reasons.append(f"source fold {fold} is gone ({path})")
    elif sha != source.get("manifest_sha256"):
        reasons.append(f"source fold {fold} changed since extraction (re-prepared?)")
    if current_prep is None:
        name = (fold_manifest.get("backbone") or {}).get("profile")
        reasons.append(f"backbone profile {name} not found: cannot confirm the preprocessing")
    elif current_prep != fold_manifest.get("preprocessing"):
        changed = [
            k
            for k in sorted(set(current_prep) | set(fold_manifest.get("preprocessing") or {}))
            if current_prep.get(k) != (fold_manifest.get("preprocessing") or {}).get(k)
        ]
        reasons.append(f"preprocessing changed since extraction ({', '.join(changed)})")
    return reasons


def value_problems(fold_manifest: dict[str, Any], cls_std_range) -> list[str]:
    """Failures recorded by the extraction (or re-found by ``features check``)."""
    stats = fold_manifest.get("stats") or {}
    fold = fold_manifest.get("fold")
    problems = []
    for what in ("cls", "tokens"):
        if stats.get(f"nonfinite_{what}_rows"):
            count = stats[f"nonfinite_{what}_rows"]
            problems.append(f"fold {fold}: {count} tiles with non-finite {what} values")
        if stats.get(f"constant_{what}_rows"):
            problems.append(f"fold {fold}: {stats[f'constant_{what}_rows']} constant {what} rows")
    std = stats.get("cls_std")
    if cls_std_range and std is not None and not (cls_std_range[0] <= std <= cls_std_range[1]):
        problems.append(f"fold {fold}: {cls_std_message(std, cls_std_range)}")
    return problems


def cls_std_message(std: float, bounds) -> str:
    return (
        f"CLS std {std:.3f} outside the expected [{bounds[0]:g}, {bounds[1]:g}]: a missing final "
        "norm (CLS read from a raw block) or wrong mean/std, as in seeds/001 (0.28 for ~0.77)"
    )


@dataclass
class FeatureFold:
    fold: int
    path: Path
    manifest: dict[str, Any]
    tissues: list[str]

    @property
    def cls(self) -> np.ndarray:
        return open_npy(self.path / "cls.npy")

    @property
    def tokens(self) -> np.ndarray:
        return open_npy(self.path / "tokens.npy")

    def __len__(self) -> int:
        return len(self.tissues)


@dataclass
class FeatureStore:
    path: Path
    manifest: dict[str, Any]
    folds: dict[int, FeatureFold] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # problems overridden by force

    def fold(self, k: int) -> FeatureFold:
        if k not in self.folds:
            have = ", ".join(map(str, sorted(self.folds))) or "none"
            raise BadInputError(
                f"{self.path}: fold {k} not extracted (complete folds: {have}); run "
                f"cellbench features extract --folds {k}"
            )
        return self.folds[k]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def open_feature_store(
    path: str | Path, folds=None, force: bool = False, check_values: bool = True
) -> FeatureStore:
    """Open ``<store>/features/<tag>`` for training or evaluation.

    Refuses (BadInputError, one line naming the reason and ``--force``) a fold that is
    incomplete, stale, or whose values failed; with ``force`` those become ``warnings``.
    ``folds`` limits the checks to the folds the caller will read (None: every fold).
    """
    path = Path(path).expanduser()
    manifest = read_manifest(path / "manifest.json")
    if manifest is None:
        raise BadInputError(
            f"{path}: not a feature store (no {FEATURE_FORMAT} manifest.json); make one with "
            "cellbench features extract"
        )
    store = FeatureStore(path=path, manifest=manifest)
    wanted = list(folds) if folds is not None else fold_numbers(path)
    prep = preprocessing_now(manifest)
    cls_range = (manifest.get("expect") or {}).get("cls_std")
    for k in wanted:
        folder = fold_path(path, k)
        fm = read_manifest(folder / "manifest.json")
        if fm is None:
            continue  # reported by store.fold(k) when the caller asks for it
        problems = []
        if not fm.get("complete"):
            problems.append(
                f"fold {k} extraction incomplete ({fm.get('done', 0)}/{fm.get('tiles')} tiles); "
                "rerun cellbench features extract to resume"
            )
        else:
            problems += staleness(fm, prep, folder)
            if check_values:
                problems += value_problems(fm, cls_range)
                problems += cls_row_problems(folder / "cls.npy", k)
                problems += token_row_problems(folder / "tokens.npy", k)
        if problems and not force:
            raise BadInputError(f"{path}: {problems[0]} (--force uses it anyway)")
        store.warnings += problems
        if fm.get("complete") or force:
            tissues = json.loads((folder / "tissues.json").read_text())
            store.folds[k] = FeatureFold(k, folder, fm, [str(t) for t in tissues])
    return store


def cls_row_problems(path: Path, fold: int) -> list[str]:
    """Non-finite values and constant rows of a CLS file (small: N x D, read at once)."""
    cls = np.asarray(open_npy(path), dtype=np.float32)
    problems = []
    rows = np.flatnonzero(~np.isfinite(cls).all(axis=1)) if cls.ndim == 2 else []
    if len(rows):
        problems.append(
            f"fold {fold}: non-finite CLS values in row {int(rows[0])} of {path} ({len(rows)} "
            "rows); cellbench features check lists them, features extract --force redoes it"
        )
    constant = int((cls.max(axis=1) == cls.min(axis=1)).sum()) if cls.size else 0
    if constant:
        problems.append(f"fold {fold}: {constant} constant CLS rows in {path} (never written?)")
    return problems


TOKEN_SCAN_BYTES = 64 * 2**20  # rows per chunk: bounded memory, whatever the store's size


def token_row_problems(path: Path, fold: int) -> list[str]:
    """The first row (tile) of a tokens file holding NaN/Inf, and how many do: read chunk by
    chunk (a real fold is GBs). A NaN here used to surface as "non-finite loss" mid-training;
    it is a data error, refused before a run exists."""
    tokens = open_npy(path)
    if tokens.ndim == 0 or len(tokens) == 0:
        return []
    row_bytes = max(1, tokens[0].nbytes)
    step = max(1, TOKEN_SCAN_BYTES // row_bytes)
    first, count = None, 0
    for start in range(0, len(tokens), step):
        chunk = np.asarray(tokens[start : start + step])
        bad = np.flatnonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1))
        if len(bad):
            first = start + int(bad[0]) if first is None else first
            count += len(bad)
    if first is None:
        return []
    return [
        f"fold {fold}: non-finite token values in row {first} of {path} ({count} rows); "
        "cellbench features check lists them, features extract --force redoes it"
    ]
