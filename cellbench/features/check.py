"""``features check``: are these features what the backbone should give, for today's data?

=============  ========  ==================================================================
check          severity  fires when
=============  ========  ==================================================================
format         error     no feature-store manifest, a missing or truncated array file
incomplete     error     a fold's extraction did not finish (rerun extract to resume it)
stale          error     the source fold was re-prepared, or the profile's preprocessing
                         (mean, std, input size, resize) changed since extraction
counts         error     feature rows differ from the source fold's tiles or tissues
cls_std        error     the CLS std is outside the profile's ``expect.cls_std`` (seeds/001:
                         0.28 instead of ~0.77 from a missing final norm or wrong mean/std)
nonfinite      error     NaN or Inf in CLS or tokens
constant       error     a tile whose CLS (or tokens) is one value repeated (never written?)
duplicates     warning   identical CLS rows (error above 5% of the tiles): duplicate source
                         tiles (see ``data check``) or a backbone that ignores its input
=============  ========  ==================================================================

Every array is read chunk by chunk (the tokens of a real fold are tens of GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.data.npyio import open_npy, release_rows
from cellbench.errors import BadInputError
from cellbench.features.store import (
    cls_std_message,
    fold_numbers,
    fold_path,
    preprocessing_now,
    read_manifest,
    source_manifest,
    staleness,
)

DUPLICATE_ERROR_FRACTION = 0.05


@dataclass
class Finding:
    severity: str  # error | warning | info
    fold: int | None
    check: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FeatureCheckReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    folds: dict[int, dict[str, Any]] = field(default_factory=dict)  # per-fold measurements

    def add(self, severity: str, fold: int | None, check: str, message: str) -> None:
        self.findings.append(Finding(severity, fold, check, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "folds": {str(k): v for k, v in self.folds.items()},
            "findings": [f.to_dict() for f in self.findings],
        }


def _scan_rows(arr: np.ndarray, chunk_rows: int) -> tuple[int, int]:
    """(non-finite values, constant rows) of an array, a chunk of rows at a time."""
    nonfinite = constant = 0
    for start in range(0, len(arr), chunk_rows):
        block = np.asarray(arr[start : start + chunk_rows], dtype=np.float32)
        flat = block.reshape(len(block), -1)
        nonfinite += int((~np.isfinite(flat)).sum())
        constant += int((flat.max(axis=1) == flat.min(axis=1)).sum()) if flat.size else 0
        release_rows(arr, start, start + len(block))
    return nonfinite, constant


def _duplicate_rows(cls: np.ndarray) -> int:
    if not len(cls):
        return 0
    rows = np.ascontiguousarray(cls).view(np.dtype((np.void, cls.dtype.itemsize * cls.shape[1])))
    return int(len(rows) - len(np.unique(rows)))


def _check_fold(report: FeatureCheckReport, root: Path, k: int, prep, expect) -> None:
    folder = fold_path(root, k)
    fm = read_manifest(folder / "manifest.json") or {}
    measured: dict[str, Any] = {"tiles": fm.get("tiles"), "complete": bool(fm.get("complete"))}
    report.folds[k] = measured
    if not fm.get("complete"):
        report.add(
            "error",
            k,
            "incomplete",
            f"{folder}: extraction stopped at {fm.get('done', 0)}/{fm.get('tiles')} tiles; "
            "rerun cellbench features extract to resume",
        )
        return
    for reason in staleness(fm, prep, folder):
        report.add("error", k, "stale", f"{folder}: stale: {reason}; extract again")
    try:
        cls, tokens = open_npy(folder / "cls.npy"), open_npy(folder / "tokens.npy")
    except BadInputError as exc:
        report.add("error", k, "format", str(exc))
        return
    n = int(fm.get("tiles") or 0)
    expected_tokens = (n, len(fm.get("blocks", [])), *fm.get("grid", []), fm.get("dim"))
    if cls.shape != (n, fm.get("dim")) or tokens.shape != expected_tokens:
        report.add(
            "error",
            k,
            "counts",
            f"{folder}: arrays {cls.shape} / {tokens.shape}, manifest says {n} tiles "
            f"of {expected_tokens}",
        )
        return
    _check_counts(report, folder, fm, k, n)
    values = np.asarray(cls, dtype=np.float64)
    finite = values[np.isfinite(values)]
    std = float(finite.std()) if finite.size else float("nan")
    measured.update(cls_mean=float(finite.mean()) if finite.size else None, cls_std=std)
    bounds = (expect or {}).get("cls_std")
    if bounds and not (bounds[0] <= std <= bounds[1]):
        report.add("error", k, "cls_std", f"{folder}: {cls_std_message(std, bounds)}")
    elif not bounds:
        report.add("info", k, "cls_std", f"{folder}: CLS std {std:.3f} (no expected range)")
    row_bytes = max(1, tokens[0].nbytes if len(tokens) else 1)
    chunk = max(1, (64 << 20) // row_bytes)  # ~64 MB of tokens per read
    for name, arr, rows in (("cls", cls, 4096), ("tokens", tokens, chunk)):
        nonfinite, constant = _scan_rows(arr, rows)
        measured[f"nonfinite_{name}"], measured[f"constant_{name}_rows"] = nonfinite, constant
        if nonfinite:
            report.add("error", k, "nonfinite", f"{folder / name}.npy: {nonfinite} NaN/Inf values")
        if constant:
            report.add(
                "error",
                k,
                "constant",
                f"{folder / name}.npy: {constant} tiles whose {name} features are one constant "
                "value (never written, or a dead backbone)",
            )
    dups = _duplicate_rows(np.asarray(cls))
    measured["duplicate_cls_rows"] = dups
    if dups:
        severity = "error" if dups > DUPLICATE_ERROR_FRACTION * n else "warning"
        report.add(
            severity,
            k,
            "duplicates",
            f"{folder / 'cls.npy'}: {dups} tiles share their CLS with another tile (duplicate "
            "source tiles? see cellbench data check)",
        )


def _check_counts(report: FeatureCheckReport, folder: Path, fm: dict, k: int, n: int) -> None:
    import json

    from cellbench.data.store import read_json

    source = source_manifest(folder, k)
    try:
        tiles = read_json(source).get("tiles")
    except (BadInputError, AttributeError):
        return  # a missing source is already reported as stale
    if tiles != n:
        report.add("error", k, "counts", f"{folder}: {n} feature rows, source fold has {tiles}")
    try:
        ours = json.loads((folder / "tissues.json").read_text())
        theirs = json.loads((source.parent / "tissues.json").read_text())
    except (OSError, ValueError) as exc:
        report.add("error", k, "counts", f"{folder / 'tissues.json'}: unreadable ({exc})")
        return
    if ours != theirs:
        report.add("error", k, "counts", f"{folder}: tissues differ from {source.parent}")


def _not_a_feature_store(root: Path) -> str:
    """Why ``root`` is no feature store, saying what it is when cellbench knows (a canonical
    data store has a manifest.json too: "no manifest.json" sent users looking for a lost file)."""
    from cellbench.ownership import read_manifest as read_cellbench_manifest

    if not (root / "manifest.json").is_file():
        return f"{root}: not a feature store (no manifest.json)"
    if read_cellbench_manifest(root / "manifest.json")[0] is not None:
        tags = sorted(p.name for p in (root / "features").glob("*") if p.is_dir())
        hint = (
            f"; its feature stores: {', '.join(f'{root}/features/{t}' for t in tags)}"
            if tags
            else "; make one with cellbench features extract --data " + str(root)
        )
        return f"{root}: a data store, not a feature store{hint}"
    return f"{root}: not a feature store (its manifest.json is not a feature store's)"


def check_feature_store(path: str | Path) -> FeatureCheckReport:
    """Every check of the table above, on every fold of ``<store>/features/<tag>``."""
    root = Path(path).expanduser()
    report = FeatureCheckReport(root)
    manifest = read_manifest(root / "manifest.json")
    if manifest is None:
        report.add("error", None, "format", _not_a_feature_store(root))
        return report
    folds = fold_numbers(root)
    if not folds:
        report.add("error", None, "format", f"{root}: no extracted fold")
    prep = preprocessing_now(manifest)
    for k in folds:
        _check_fold(report, root, k, prep, manifest.get("expect"))
    return report
