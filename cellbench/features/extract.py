"""``features extract``: stream a frozen backbone's features of a nuclei store into the feature
store (layout in ``cellbench.features.store``), chunk by chunk, resumable.

Memory stays bounded by the chunk: the source images are memory-mapped and read ``chunk_size``
tiles at a time, the outputs are memory-mapped ``.npy`` files written in place, and the pages of
each finished chunk are dropped from our RSS (``npyio.release_rows``).

Resuming: the fold manifest is written *before* the arrays are created (so ``clean`` knows the
files of an interrupted extraction) and rewritten atomically after each chunk, once that chunk's
rows are flushed to disk, with the number of tiles done. A kill at any point leaves a fold whose
manifest says ``complete: false`` and counts only flushed rows; the next run with the same
backbone, weights, preprocessing and blocks continues from there, in the same batches, so the
result is byte-identical to an uninterrupted run. SIGTERM is turned into the same interruption as
Ctrl-C (exit 130).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.data.npyio import read_header, read_rows, release_rows
from cellbench.data.store import fold_dir, is_store, open_fold, store_folds
from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.features.store import (
    FEATURE_FORMAT,
    FEATURE_FORMAT_VERSION,
    FOLD_FILES,
    LOCK_NAME,
    file_sha256,
    fold_numbers,
    fold_path,
    read_manifest,
    tag_dir,
)
from cellbench.models.backbones import Backbone
from cellbench.runs.layout import NAME_RE
from cellbench.runs.lock import RunLock
from cellbench.signals import graceful_signals

Progress = Callable[[int, int, int], None]  # (fold, tiles done, tiles total)
# what must match for a fold to be resumed or reused (not batch or chunk size)
IDENTITY_KEYS = ("backbone", "preprocessing", "blocks", "grid", "dim", "source", "tiles")


@dataclass
class FoldResult:
    fold: int
    status: str  # extracted | resumed | up to date
    tiles: int
    cls_std: float | None
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def default_tag(backbone: Backbone) -> str:
    return backbone.profile.name.replace("/", "_").replace(":", "_")


def _identity(backbone: Backbone, source_manifest: Path, tiles: int) -> dict[str, Any]:
    return {
        "backbone": backbone.describe(),
        "preprocessing": backbone.profile.preprocessing(),
        "blocks": list(backbone.blocks),
        "grid": list(backbone.grid),
        "dim": backbone.dim,
        "source": {
            "store": str(source_manifest.parent.parent.resolve()),
            "fold_manifest": str(source_manifest.resolve()),
            "manifest_sha256": file_sha256(source_manifest),
        },
        "tiles": tiles,
    }


def _key(manifest: dict[str, Any], key: str) -> str:
    """One identity entry as JSON (so a manifest read back equals the dict it was written
    from); of the source, its content only: a store moved whole keeps its features."""
    value = manifest.get(key)
    if key == "source":
        value = (value or {}).get("manifest_sha256")
    return json.dumps(value, sort_keys=True)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(_key(a, k) == _key(b, k) for k in IDENTITY_KEYS)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    return ", ".join(k for k in IDENTITY_KEYS if _key(old, k) != _key(new, k)) or "nothing"


def _shapes(identity: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    n, (gh, gw), d = identity["tiles"], identity["grid"], identity["dim"]
    return {"cls": (n, d), "tokens": (n, len(identity["blocks"]), gh, gw, d)}


def _arrays_ok(folder: Path, shapes: dict[str, tuple[int, ...]]) -> bool:
    for name, shape in shapes.items():
        try:
            got, dtype, _, _ = read_header(folder / f"{name}.npy")
        except BadInputError:
            return False
        if got != shape or dtype != np.float16:
            return False
    return True


def _check_tag_folder(root: Path) -> None:
    """Refuse a tag folder that holds things cellbench did not write."""
    if root.exists() and not root.is_dir():
        raise BadInputError(f"{root}: exists and is not a folder")
    if not root.is_dir() or read_manifest(root / "manifest.json") is not None:
        return
    leftovers = [p.name for p in root.iterdir() if p.name != LOCK_NAME]
    if leftovers and not fold_numbers(root):
        raise BadInputError(
            f"{root}: exists and is not a feature store ({', '.join(sorted(leftovers)[:3])}); "
            "choose another --tag"
        )


def write_tag_manifest(root: Path, identity: dict[str, Any], expect: dict[str, Any]) -> None:
    """Rebuild ``<tag>/manifest.json`` from the fold manifests (atomic)."""
    folds, files = {}, ["manifest.json"]
    for k in fold_numbers(root):
        fm = read_manifest(fold_path(root, k) / "manifest.json") or {}
        stats = fm.get("stats") or {}
        folds[str(k)] = {
            "tiles": fm.get("tiles"),
            "done": fm.get("done"),
            "complete": bool(fm.get("complete")),
            "cls_mean": stats.get("cls_mean"),
            "cls_std": stats.get("cls_std"),
            "source_manifest_sha256": (fm.get("source") or {}).get("manifest_sha256"),
        }
        files += [f"fold{k}/{name}" for name in fm.get("files", [])]
    manifest = {
        "format": FEATURE_FORMAT,
        "format_version": FEATURE_FORMAT_VERSION,
        "cellbench_version": __version__,
        "tag": root.name,
        **{k: identity[k] for k in ("backbone", "preprocessing", "blocks", "grid", "dim")},
        "dtype": "float16",
        "source_store": identity["source"]["store"],
        "expect": expect,
        "folds": folds,
        "files": sorted(files),
    }
    atomic_write_json(root / "manifest.json", manifest)


def _row_stats(cls: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tiles whose features, as stored in float16, hold NaN/Inf, and tiles whose features are
    one constant value: one min/max pass per array in the model's own precision (NaN propagates
    through it; a value beyond float16's range shows as an infinite min or max once cast), on the
    device, before the cast."""
    out = {}
    for name, value in (("cls", cls), ("tokens", tokens)):
        low, high = torch.aminmax(value.flatten(1), dim=1)
        low16, high16 = low.to(torch.float16), high.to(torch.float16)
        bad = ~(torch.isfinite(low16) & torch.isfinite(high16))
        out[f"nonfinite_{name}_rows"] = bad.sum()
        out[f"constant_{name}_rows"] = (~bad & (low == high)).sum()
    return out


def _cls_moments(path: Path, chunk: int = 4096) -> tuple[float, float]:
    """Mean and std of every CLS value, in float64, chunk by chunk."""
    arr = np.load(path, mmap_mode="r")
    total, sq, count = 0.0, 0.0, 0
    for start in range(0, len(arr), chunk):
        block = np.asarray(arr[start : start + chunk], dtype=np.float64)
        block = block[np.isfinite(block)]
        total += float(block.sum())
        sq += float(np.square(block).sum())
        count += block.size
    if not count:
        return float("nan"), float("nan")
    mean = total / count
    return mean, float(np.sqrt(max(sq / count - mean * mean, 0.0)))


def extract_fold(
    backbone: Backbone,
    data_root: Path,
    root: Path,
    fold: int,
    *,
    batch_size: int,
    chunk_size: int,
    force: bool,
    progress: Progress | None,
    expect: dict[str, Any],
) -> FoldResult:
    source = open_fold(data_root, fold)  # validates the source fold's files
    n = len(source)
    identity = _identity(backbone, fold_dir(data_root, fold) / "manifest.json", n)
    folder = fold_path(root, fold)
    old = read_manifest(folder / "manifest.json")
    shapes = _shapes(identity)
    if folder.exists() and old is None and any(folder.iterdir()):
        raise BadInputError(
            f"{folder}: exists and is not a feature-store fold; choose another --tag"
        )
    start, stats, status = 0, {}, "extracted"
    if old is not None and _same(old, identity) and _arrays_ok(folder, shapes):
        if old.get("complete") and not force:
            return FoldResult(
                fold, "up to date", n, (old.get("stats") or {}).get("cls_std"), folder
            )
        if not old.get("complete"):
            start, stats, status = int(old.get("done", 0)), dict(old.get("stats") or {}), "resumed"
    elif old is not None and old.get("complete") and not force:
        raise RunConflict(
            f"{folder}: already extracted with other settings ({_differences(old, identity)} "
            "differ); use another --tag, or --force to replace it"
        )
    manifest = {
        "format": FEATURE_FORMAT,
        "format_version": FEATURE_FORMAT_VERSION,
        "cellbench_version": __version__,
        "fold": fold,
        **identity,
        "dtype": "float16",
        "complete": False,
        "done": start,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "created": (old or {}).get("created") if start else _now(),
        "stats": stats,
        "counts": {"tiles": n, "per_tissue": _per_tissue(source.tissues)},
        "files": sorted(FOLD_FILES),
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "manifest.json", manifest)  # first: clean knows these files
    write_tag_manifest(root, identity, expect)
    mode = "r+" if start else "w+"
    out = {
        name: np.lib.format.open_memmap(
            folder / f"{name}.npy", mode=mode, dtype=np.float16, shape=shape
        )
        for name, shape in shapes.items()
    }
    if not start:
        atomic_write_json(folder / "tissues.json", source.tissues)
    for what in ("cls", "tokens"):
        stats.setdefault(f"nonfinite_{what}_rows", 0)
        stats.setdefault(f"constant_{what}_rows", 0)
    if progress:
        progress(fold, start, n)
    for c0 in range(start, n, chunk_size):
        c1 = min(n, c0 + chunk_size)
        images = read_rows(source.path / "images.npy", c0, c1)  # a plain read, not page faults
        counts = []
        for b0 in range(0, len(images), batch_size):
            cls, tokens = backbone.extract(images[b0 : b0 + batch_size])
            counts.append(_row_stats(cls, tokens))
            cls, tokens = cls.to(torch.float16), tokens.to(torch.float16)
            i0 = c0 + b0
            i1 = i0 + len(cls)
            out["cls"][i0:i1] = cls.cpu().numpy()
            out["tokens"][i0:i1] = tokens.cpu().numpy()
        for name in counts[0]:
            stats[name] += int(sum(c[name] for c in counts))  # one device sync per chunk
        for arr in out.values():
            arr.flush()  # the rows are on disk before the manifest counts them
            release_rows(arr, c0, c1)
        manifest["done"] = c1
        atomic_write_json(folder / "manifest.json", manifest)
        if progress:
            progress(fold, c1, n)
    del out
    stats["cls_mean"], stats["cls_std"] = _cls_moments(folder / "cls.npy")
    manifest.update(complete=True, done=n, finished=_now(), stats=stats)
    atomic_write_json(folder / "manifest.json", manifest)
    write_tag_manifest(root, identity, expect)
    return FoldResult(fold, status, n, stats["cls_std"], folder)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _per_tissue(tissues: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tissues:
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def extract_features(
    data_root: str | Path,
    backbone: Backbone,
    folds: Sequence[int] | None = None,
    tag: str | None = None,
    *,
    batch_size: int = 8,
    chunk_size: int = 300,
    force: bool = False,
    progress: Progress | None = None,
) -> tuple[Path, list[FoldResult]]:
    """Extract ``folds`` (default: every fold of the store) into ``<data>/features/<tag>``."""
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir() or not is_store(data_root):
        raise BadInputError(
            f"{data_root}: not a cellbench nuclei store (make one with cellbench data prepare)"
        )
    available = store_folds(data_root)
    chosen = sorted(set(folds)) if folds else available
    missing = [k for k in chosen if k not in available]
    if missing or not chosen:
        raise BadInputError(
            f"{data_root}: fold(s) {', '.join(map(str, missing)) or 'any'} not in the store "
            f"(complete folds: {', '.join(map(str, available)) or 'none'})"
        )
    if batch_size < 1 or chunk_size < 1:
        raise UsageError("--batch-size and --chunk-size must be at least 1")
    tag = tag or default_tag(backbone)
    if not NAME_RE.fullmatch(tag):
        raise UsageError(f"--tag {tag!r}: use letters, digits, '.', '_' or '-'")
    root = tag_dir(data_root, tag)
    _check_tag_folder(root)
    expect = {"cls_std": list(backbone.profile.cls_std)} if backbone.profile.cls_std else {}
    results = []
    # SIGTERM/SIGHUP stop it like Ctrl-C: between two writes, resumable (cellbench.signals)
    with RunLock(root / LOCK_NAME, what="feature store"), graceful_signals():
        for k in chosen:
            results.append(
                extract_fold(
                    backbone,
                    data_root,
                    root,
                    k,
                    batch_size=batch_size,
                    chunk_size=chunk_size,
                    force=force,
                    progress=progress,
                    expect=expect,
                )
            )
    return root, results
