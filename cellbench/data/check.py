"""``data check``: find what is wrong with a raw PanNuke dataset or a canonical store.

Every problem becomes a ``Finding`` (severity, fold, check name, message naming the file); the
check never stops at the first one except when a file cannot be read at all. Errors make the
command exit 1; warnings and infos do not. The seeds' silent bugs each have a named check:
images stored as int8, HV stored as int8 or outside [-1, 1], the background channel used as a
nucleus class, HV computed with another convention.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.data.convert import Quirks, convert_masks
from cellbench.data.families import FOLDS, NUCLEUS_TYPES, TISSUES
from cellbench.data.npyio import release_rows
from cellbench.data.pannuke import discover_folds, open_raw_fold
from cellbench.data.store import fold_contract, fold_dir, is_store, read_json
from cellbench.data.targets import global_labels, hv_maps
from cellbench.errors import BadInputError

SEVERITIES = ("error", "warning", "info")
HV_TOLERANCE = 1e-4
Progress = Callable[[int, int, int], None]


@dataclass
class Finding:
    severity: str
    fold: int | None
    check: str
    message: str


@dataclass
class CheckReport:
    root: Path
    kind: str  # "raw" | "store"
    folds: list[int] = field(default_factory=list)
    tiles: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: str, fold: int | None, check: str, message: str) -> None:
        self.findings.append(Finding(severity, fold, check, message))

    def count(self, severity: str) -> int:
        return sum(f.severity == severity for f in self.findings)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kind": self.kind,
            "folds": self.folds,
            "tiles": self.tiles,
            "ok": self.ok,
            "errors": self.count("error"),
            "warnings": self.count("warning"),
            "findings": [asdict(f) for f in self.findings],
        }


class _Duplicates:
    """Tiles with byte-identical images, across all folds (a leak when they span folds)."""

    def __init__(self) -> None:
        self.seen: dict[bytes, tuple[int, int]] = {}
        self.pairs: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def add(self, fold: int, start: int, images: np.ndarray) -> None:
        for i, tile in enumerate(images):
            digest = hashlib.blake2b(np.ascontiguousarray(tile).tobytes(), digest_size=16).digest()
            where = (fold, start + i)
            if digest in self.seen:
                self.pairs.append((self.seen[digest], where))
            else:
                self.seen[digest] = where

    def report(self, report: CheckReport) -> None:
        if not self.pairs:
            return
        cross = sum(a[0] != b[0] for a, b in self.pairs)
        (fa, ta), (fb, tb) = self.pairs[0]
        report.add(
            "warning",
            None,
            "duplicates",
            f"{len(self.pairs)} duplicate tiles ({cross} across folds), e.g. fold {fa} tile {ta} "
            f"= fold {fb} tile {tb}",
        )


def _tiles(mask: np.ndarray) -> str:
    """First few tile indices where a per-tile boolean is set, for messages."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:5])
    return shown + (", ..." if len(idx) > 5 else "")


def _per_tile(k: int, flags: np.ndarray) -> np.ndarray:
    """Whether each of the k tiles of a chunk has any flagged pixel."""
    return flags.reshape(k, -1).any(axis=1)


def _scan_chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


# --------------------------------------------------------------------------- raw


def _check_raw_fold(
    root: Path,
    fold: int,
    report: CheckReport,
    dups: _Duplicates,
    chunk: int,
    progress: Progress | None,
) -> None:
    try:
        raw = open_raw_fold(root, fold, strict_tissues=False)  # unknown tissues reported below
    except BadInputError as exc:
        report.add("error", fold, "files", str(exc))
        return
    files, images, masks, tissues = raw.files, raw.images, raw.masks, raw.tissues
    n = len(images)
    report.tiles += n
    unknown = sorted(set(tissues) - set(TISSUES))
    if unknown:
        report.add("error", fold, "tissues", f"{files.types}: unknown tissue names {unknown[:5]}")
    quirks = Quirks()
    bad_images = np.zeros(n, bool)
    out_of_range = np.zeros(n, bool)
    bad_ids = np.zeros(n, bool)
    bg_values = False
    image_max = 0.0
    for start, stop in _scan_chunks(n, chunk):
        img = np.asarray(images[start:stop], dtype=np.float64)
        finite = np.isfinite(img).reshape(stop - start, -1).all(axis=1)
        bad_images[start:stop] = ~finite
        clean = np.where(np.isfinite(img), img, 0)
        out_of_range[start:stop] = ((clean < 0) | (clean > 255)).reshape(stop - start, -1).any(1)
        image_max = max(image_max, float(clean.max()) if clean.size else 0.0)
        dups.add(fold, start, np.rint(np.clip(clean, 0, 255)).astype(np.uint8))
        m = np.asarray(masks[start:stop])
        ch = m[..., :5]
        valid = np.isfinite(ch) & (ch >= 0) & (ch == np.floor(ch))
        tile_ok = valid.reshape(stop - start, -1).all(axis=1)
        bad_ids[start:stop] = ~tile_ok
        bg = m[..., 5]
        bg_values |= bool(((bg != 0) & (bg != 1)).any())
        if tile_ok.all():
            _, _, q = convert_masks(m, files.masks, start)
            quirks.add(q)
        release_rows(images, start, stop)
        release_rows(masks, start, stop)
        if progress:
            progress(fold, stop, n)
    if bad_images.any():
        report.add(
            "error", fold, "nan", f"{files.images}: NaN or inf in tiles {_tiles(bad_images)}"
        )
    if out_of_range.any():
        report.add(
            "error",
            fold,
            "range",
            f"{files.images}: values outside 0..255 in tiles {_tiles(out_of_range)}",
        )
    if n and images.dtype != np.uint8 and 0 < image_max <= 1:
        report.add("error", fold, "range", f"{files.images}: values within 0..1; expected 0..255")
    if bad_ids.any():
        report.add(
            "error",
            fold,
            "ids",
            f"{files.masks}: NaN, negative or fractional ids in tiles {_tiles(bad_ids)}",
        )
    if bg_values:
        report.add(
            "warning",
            fold,
            "background",
            f"{files.masks}: channel 5 (background) holds values other than 0/1; "
            "it is not a nucleus class",
        )
    _report_quirks(report, fold, files.masks, quirks)


def _report_quirks(report: CheckReport, fold: int, path: Path, q: Quirks) -> None:
    if q.background_mismatch_pixels:
        report.add(
            "warning",
            fold,
            "background",
            f"{path}: {q.background_mismatch_pixels} pixels where channel 5 (background) "
            "disagrees with the nucleus channels",
        )
    if q.overlap_pixels:
        report.add(
            "warning",
            fold,
            "overlap",
            f"{path}: {q.overlap_pixels} pixels in {q.overlap_tiles} tiles claimed by two "
            "channels (prepare: later channel wins)",
        )
    if q.reused_ids:
        report.add(
            "warning",
            fold,
            "reused-ids",
            f"{path}: {q.reused_ids} ids used in several channels of a tile "
            "(prepare relabels them)",
        )
    if q.split_ids:
        report.add(
            "info",
            fold,
            "split-ids",
            f"{path}: {q.split_ids} nuclei made of several disconnected pieces",
        )
    if q.empty_tiles:
        report.add("info", fold, "empty", f"{path}: {q.empty_tiles} tiles without nuclei")


# --------------------------------------------------------------------------- store


def _check_store_fold(
    root: Path,
    fold: int,
    report: CheckReport,
    dups: _Duplicates,
    chunk: int,
    progress: Progress | None,
) -> None:
    folder = fold_dir(root, fold)
    arrays, problems = fold_contract(folder)
    for check, message in problems:
        report.add("error", fold, check, message)
    if arrays is None:
        return
    n = len(arrays["inst"])
    report.tiles += n
    try:
        tissues = read_json(folder / "tissues.json")
        if not isinstance(tissues, list) or len(tissues) != n:
            report.add("error", fold, "tissues", f"{folder / 'tissues.json'}: expected {n} names")
        elif unknown := sorted(set(map(str, tissues)) - set(TISSUES)):
            report.add(
                "error",
                fold,
                "tissues",
                f"{folder / 'tissues.json'}: unknown tissue names {unknown[:5]}",
            )
    except BadInputError as exc:
        report.add("error", fold, "tissues", str(exc))
    problems: dict[str, np.ndarray] = {
        key: np.zeros(n, bool)
        for key in (
            "hv-nan",
            "hv-range",
            "hv-background",
            "hv-convention",
            "types-range",
            "types-inst",
            "mixed-type",
            "ids",
        )
    }
    hv_diff = 0.0
    empty = 0
    for start, stop in _scan_chunks(n, chunk):
        k = stop - start
        images = np.asarray(arrays["images"][start:stop])
        inst = np.asarray(arrays["inst"][start:stop])
        types = np.asarray(arrays["types"][start:stop])
        hv = np.asarray(arrays["hv"][start:stop], dtype=np.float32)
        dups.add(fold, start, images.astype(np.uint8))
        finite = np.isfinite(hv)
        problems["hv-nan"][start:stop] = _per_tile(k, ~finite)
        hv = np.where(finite, hv, 0)
        problems["hv-range"][start:stop] = _per_tile(k, np.abs(hv) > 1)
        problems["hv-background"][start:stop] = _per_tile(k, (hv != 0).any(axis=1) & (inst == 0))
        problems["types-range"][start:stop] = _per_tile(k, types > len(NUCLEUS_TYPES))
        problems["types-inst"][start:stop] = _per_tile(k, (types > 0) != (inst > 0))
        problems["ids"][start:stop] = _per_tile(k, inst < 0)
        empty += int((~_per_tile(k, inst > 0)).sum())
        if (inst >= 0).all():
            labels, n_labels = global_labels(inst)
            fg = labels > 0
            lo = np.full(n_labels + 1, 255, np.int64)
            hi = np.zeros(n_labels + 1, np.int64)
            np.minimum.at(lo, labels[fg], types[fg])
            np.maximum.at(hi, labels[fg], types[fg])
            mixed_labels = np.flatnonzero((hi != lo) & (hi > 0))
            if mixed_labels.size:
                offsets = np.concatenate([[0], np.cumsum(inst.reshape(k, -1).max(1))])
                tiles_mixed = np.searchsorted(offsets, mixed_labels, side="left") - 1
                problems["mixed-type"][start + np.unique(tiles_mixed)] = True
            expected = hv_maps(inst)
            diff = np.abs(expected - hv).reshape(k, -1).max(axis=1) if hv.size else np.zeros(k)
            problems["hv-convention"][start:stop] = diff > HV_TOLERANCE
            hv_diff = max(hv_diff, float(diff.max()) if diff.size else 0.0)
        for arr in arrays.values():
            release_rows(arr, start, stop)
        if progress:
            progress(fold, stop, n)
    messages = {
        "hv-nan": ("hv.npy", "NaN or inf in HV maps"),
        "hv-range": ("hv.npy", "HV values outside [-1, 1]"),
        "hv-background": ("hv.npy", "non-zero HV on background pixels"),
        "hv-convention": (
            "hv.npy",
            f"HV differs from the instance map's exact-centroid HV (max difference {hv_diff:.3g})",
        ),
        "types-range": ("types.npy", f"type ids above {len(NUCLEUS_TYPES)} (0..5 expected)"),
        "types-inst": ("types.npy", "type map and instance map disagree on nucleus pixels"),
        "mixed-type": ("types.npy", "nuclei with pixels of different types"),
        "ids": ("inst.npy", "negative instance ids"),
    }
    for key, flags in problems.items():
        if flags.any():
            name, text = messages[key]
            report.add("error", fold, key, f"{folder / name}: {text} in tiles {_tiles(flags)}")
    if empty:
        report.add("info", fold, "empty", f"{folder / 'inst.npy'}: {empty} tiles without nuclei")


# --------------------------------------------------------------------------- entry point


def check_dataset(root: Path, chunk: int = 32, progress: Progress | None = None) -> CheckReport:
    """Check every fold of a raw PanNuke dataset or a canonical store under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: no such folder")
    store = is_store(root)
    report = CheckReport(root=root, kind="store" if store else "raw")
    if store:
        report.folds = sorted(
            int(p.name[4:]) for p in root.glob("fold*") if p.is_dir() and p.name[4:].isdigit()
        )
    else:
        report.folds = discover_folds(root)
    if not report.folds:
        report.add(
            "error",
            None,
            "folds",
            f"{root}: no folds found (expected 'Fold k/...', 'fold<k>/' or a store)",
        )
        return report
    for fold in sorted(set(FOLDS) - set(report.folds)):
        report.add(
            "warning",
            fold,
            "folds",
            f"{root}: fold {fold} missing (the PanNuke protocol uses folds 1, 2, 3)",
        )
    dups = _Duplicates()
    for fold in report.folds:
        if store:
            _check_store_fold(root, fold, report, dups, chunk, progress)
        else:
            _check_raw_fold(root, fold, report, dups, chunk, progress)
    dups.report(report)
    return report
