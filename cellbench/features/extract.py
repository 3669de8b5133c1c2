"""``features extract``: stream a frozen backbone's features of a nuclei store into the feature
store (layout in ``cellbench.features.store``), resumable.

The slide pipeline's stages (``cellbench.inference.pipeline``), with batches for items: a reader
thread reads the next batches of the source fold (plain reads, pinned for the copy when the
device is a GPU) while the device runs this one; the device casts the features to float16 (the
blocks stacked and cast in one copy) and checks them, and they are copied into pinned host
buffers asynchronously (``HostStaging``); a background writer (``BackgroundWriter``) writes the
rows in place (``npyio.NpyRows``: nothing mapped, nothing in our RSS) and commits. Memory is
bounded by the batches in flight, not by the fold.

Committing: the fold manifest is written *before* the arrays are created (so ``clean`` knows the
files of an interrupted extraction). A commit puts the rows written so far on disk (fsync) and
then rewrites the manifest atomically with their number; commits happen by time (every
``COMMIT_SECONDS``; ``chunk_size`` also bounds the tiles between two commits when given), and
at the end, and when Ctrl-C or SIGTERM stops the extraction (the batches already handed to the
writer are written first). A kill at any point leaves a fold whose manifest says
``complete: false`` and counts only rows on disk; the next run with the same backbone, weights,
preprocessing and blocks continues from there in the same batches (batches start at multiples
of the batch size), so the result is byte-identical to an uninterrupted run. SIGTERM is turned
into the same interruption as Ctrl-C (exit 130).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.data.npyio import NpyRowReader, NpyRows, read_header
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
from cellbench.inference.pipeline import (
    BackgroundWriter,
    HostSlot,
    HostStaging,
    StageClock,
    prefetched,
)
from cellbench.models.backbones import Backbone, stack_blocks
from cellbench.runs.layout import NAME_RE
from cellbench.runs.lock import RunLock
from cellbench.signals import graceful_signals

Progress = Callable[[int, int, int], None]  # (fold, tiles done, tiles total)
# what must match for a fold to be resumed or reused (not batch or chunk size)
IDENTITY_KEYS = ("backbone", "preprocessing", "blocks", "grid", "dim", "source", "tiles")
COMMIT_SECONDS = 10.0  # work an interruption may redo, at most (plus what chunk_size allows)
WRITE_DEPTH = 4  # batches waiting for the writer: bounds host memory
READ_AHEAD = 3  # batches being read while the device runs one
ROW_STATS = ("nonfinite_cls_rows", "constant_cls_rows", "nonfinite_tokens_rows",
             "constant_tokens_rows")  # fmt: skip


@dataclass
class FoldResult:
    fold: int
    status: str  # extracted | resumed | up to date
    tiles: int
    cls_std: float | None  # None: undefined (every CLS value NaN/Inf)
    path: Path
    nonfinite_tiles: int = 0  # tiles whose CLS or tokens hold NaN/Inf (as stored, float16)

    @classmethod
    def of(cls, fold: int, status: str, tiles: int, stats: dict, path: Path) -> FoldResult:
        std = stats.get("cls_std")
        bad = max(
            int(stats.get("nonfinite_cls_rows") or 0), int(stats.get("nonfinite_tokens_rows") or 0)
        )
        return cls(
            fold, status, tiles, std if std is not None and math.isfinite(std) else None, path, bad
        )

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


def _row_stats(cls: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The ``ROW_STATS`` counts of a batch as stored (float16), stacked (int64): tiles whose
    features hold NaN/Inf (a value beyond float16's range is infinite once cast) and tiles whose
    features are one constant value, from each row's min and max (NaN propagates to both)."""
    out = []
    for value in (cls, tokens):
        rows = value.flatten(1)
        # amin and amax, not aminmax: on the CPU its per-row reduction was 8x slower (0.38 ms
        # against 0.05 ms a batch of vit-demo's tokens, 8% of the forward)
        low, high = rows.amin(1), rows.amax(1)
        bad = ~(torch.isfinite(low) & torch.isfinite(high))
        out += [bad.sum(), (~bad & (low == high)).sum()]
    return torch.stack(out)


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


def _stream_rows(
    backbone: Backbone,
    images: Path,
    files: dict[str, NpyRows],
    manifest: dict[str, Any],
    manifest_path: Path,
    *,
    batch_size: int,
    chunk_size: int | None,
    progress: Callable[[int], None] | None,
) -> StageClock:
    """Rows ``manifest["done"]`` onward of the fold: read -> device -> writer (module doc).
    Returns the stages' busy seconds."""
    n = int(manifest["tiles"])
    stats = manifest["stats"]
    first = int(manifest["done"])
    batches = list(enumerate((i, min(n, i + batch_size)) for i in range(first, n, batch_size)))
    on_gpu = backbone.device.type == "cuda"
    clock = StageClock(readers=1)
    staging = HostStaging(WRITE_DEPTH + 2, pinned=on_gpu)
    d = backbone.dim
    grid = backbone.grid
    tokens_shape = (len(backbone.blocks), *grid, d)
    # the reader's buffers on the CPU, reused: batch k's is taken again by batch k + len(ring),
    # read once batch k + 2 is being forwarded, long after preprocess copied batch k out of it
    ring: list[np.ndarray | None] = [None] * (READ_AHEAD + 2)
    written = {"rows": first, "at": time.monotonic()}

    def read(job: tuple[int, tuple[int, int]]) -> np.ndarray | torch.Tensor:
        k, (i0, i1) = job
        if on_gpu:  # torch's pinned allocator reuses a buffer once the copy from it is done
            pixels = torch.empty((i1 - i0, *rows_in.row_shape), dtype=torch.uint8, pin_memory=True)
            rows_in.read_into(i0, pixels.numpy())
            return pixels
        slot = k % len(ring)
        if ring[slot] is None:
            ring[slot] = np.empty((batch_size, *rows_in.row_shape), dtype=rows_in.dtype)
        return rows_in.read_into(i0, ring[slot][: i1 - i0])

    def commit() -> None:
        """The rows written so far on disk, then counted in the manifest (atomic)."""
        for rows in files.values():
            rows.sync()
        manifest["done"] = written["rows"]
        atomic_write_json(manifest_path, manifest)
        written["at"] = time.monotonic()

    def write(rows: tuple[int, int], slot: HostSlot) -> None:  # on the writer's thread, in order
        cls, tokens, counts = slot.arrays()
        files["cls"].write(rows[0], cls)
        files["tokens"].write(rows[0], tokens)
        for name, count in zip(ROW_STATS, counts.tolist(), strict=True):
            stats[name] += int(count)
        slot.release()
        written["rows"] = rows[1]
        due = time.monotonic() - written["at"] >= COMMIT_SECONDS
        if due or (chunk_size and rows[1] - int(manifest["done"]) >= chunk_size):
            commit()

    def forward(pixels: np.ndarray | torch.Tensor) -> HostSlot:
        """The batch's float16 CLS and tokens and their row checks, in a host slot: on the CPU
        written there directly (the blocks stacked and cast in one copy); on a GPU cast and
        checked there, then copied to the slot's pinned memory while the GPU goes on."""
        b = len(pixels)
        slot = staging.take(
            [((b, d), torch.float16), ((b, *tokens_shape), torch.float16), ((4,), torch.int64)]
        )
        cls, blocks = backbone.extract_parts(pixels)
        with torch.inference_mode():
            if on_gpu:
                tokens = stack_blocks(blocks, grid, torch.float16)
                cls = cls.to(torch.float16)
                return slot.fill([cls, tokens, _row_stats(cls, tokens)])
            host_cls, host_tokens, host_counts = slot.tensors
            host_cls.copy_(cls)
            stack_blocks(blocks, grid, out=host_tokens)
            host_counts.copy_(_row_stats(host_cls, host_tokens))
            return slot

    rows_in = NpyRowReader(images)
    try:
        with BackgroundWriter(WRITE_DEPTH, clock) as writer:
            for (_, rows), pixels in prefetched(batches, read, 1, READ_AHEAD, clock):
                started = time.perf_counter()
                slot = forward(pixels)
                clock.seconds["forward"] += time.perf_counter() - started
                writer.put(write, rows, slot)
                if progress:
                    progress(rows[1])
    finally:
        rows_in.close()
        # the batches handed to the writer are written (the writer's exit waited for them):
        # commit them, also when Ctrl-C or an error stops the extraction, so a rerun redoes none
        if written["rows"] > int(manifest["done"]):
            with contextlib.suppress(Exception):  # the old manifest stays, consistent
                commit()
    return clock


def extract_fold(
    backbone: Backbone,
    data_root: Path,
    root: Path,
    fold: int,
    *,
    batch_size: int,
    chunk_size: int | None,
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
            return FoldResult.of(fold, "up to date", n, old.get("stats") or {}, folder)
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
    if not start:
        atomic_write_json(folder / "tissues.json", source.tissues)
    for name in ROW_STATS:
        stats.setdefault(name, 0)
    if progress:
        progress(fold, start, n)
    files = {
        name: NpyRows(
            folder / f"{name}.npy", np.float16, shape, create=not start, write_behind=True
        )
        for name, shape in shapes.items()
    }
    try:
        _stream_rows(
            backbone,
            source.path / "images.npy",
            files,
            manifest,
            folder / "manifest.json",
            batch_size=batch_size,
            chunk_size=chunk_size,
            progress=(lambda done: progress(fold, done, n)) if progress else None,
        )
    finally:
        for rows in files.values():
            rows.close()
    stats["cls_mean"], stats["cls_std"] = _cls_moments(folder / "cls.npy")
    manifest.update(complete=True, done=n, finished=_now(), stats=stats)
    atomic_write_json(folder / "manifest.json", manifest)
    write_tag_manifest(root, identity, expect)
    return FoldResult.of(fold, status, n, stats, folder)


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
    chunk_size: int | None = None,
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
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
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
