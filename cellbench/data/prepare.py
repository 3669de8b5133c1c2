"""``data prepare``: raw PanNuke folds -> canonical store, chunk by chunk, idempotent.

Memory stays bounded by the chunk: sources are memory-mapped, outputs are memory-mapped .npy
files filled chunk by chunk, and the pages of each finished chunk are dropped from our RSS.
Each fold is built in a staging folder and renamed when complete (see ``staging``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench import __version__, ownership
from cellbench.atomic import atomic_write_json
from cellbench.data.convert import Quirks, convert_images, convert_masks
from cellbench.data.families import NUCLEUS_TYPES
from cellbench.data.npyio import release_rows, sha256_file
from cellbench.data.pannuke import RawFold, discover_folds, is_raw_dataset, open_raw_fold
from cellbench.data.records import nucleus_records
from cellbench.data.staging import staged_dir
from cellbench.data.store import (
    HV_CONVENTION,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    create_arrays,
    fold_dir,
    is_store,
    read_json,
    store_folds,
    write_root_manifest,
)
from cellbench.data.targets import hv_maps
from cellbench.errors import BadInputError

DEFAULT_CHUNK = 32  # tiles per chunk: ~100 MB of float64 masks at 256x256
# Options that change the output; a manifest with different ones is re-prepared.
OPTIONS = {"hv": HV_CONVENTION, "overlap": "later-channel-wins", "ids": "compact-per-tile"}

Progress = Callable[[int, int, int], None]  # (fold, tiles done, tiles total)


@dataclass
class FoldReport:
    fold: int
    status: str  # "prepared" | "up to date"
    path: Path
    tiles: int = 0
    nuclei: int = 0
    quirks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def _source_record(path: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Path, size, mtime and sha256 of a source; the sha256 is reused when size and mtime match
    the previous manifest (git's stat cache idea), so a no-op prepare does not re-read 10 GB."""
    st = path.stat()
    record = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if previous and all(previous.get(k) == record[k] for k in ("path", "size", "mtime_ns")):
        record["sha256"] = previous["sha256"]
    else:
        record["sha256"] = sha256_file(path)
    return record


def _previous_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(folder / "manifest.json")
    except BadInputError:
        return None
    return manifest if isinstance(manifest, dict) else None


def _up_to_date(previous: dict[str, Any] | None, sources: dict[str, dict[str, Any]]) -> bool:
    if not previous:
        return False
    same_sources = {k: v.get("sha256") for k, v in previous.get("sources", {}).items()} == {
        k: v["sha256"] for k, v in sources.items()
    }
    return (
        same_sources
        and previous.get("cellbench_version") == __version__
        and previous.get("options") == OPTIONS
        and previous.get("format_version") == STORE_FORMAT_VERSION
    )


def _convert_fold(
    raw: RawFold, folder: Path, chunk: int, progress: Progress | None
) -> tuple[dict[str, Any], Quirks]:
    n, h, w, _ = raw.images.shape
    arrays = create_arrays(folder, n, h, w)
    quirks = Quirks()
    per_type: Counter[str] = Counter()
    nuclei_per_tile = np.zeros(n, dtype=np.int64)
    image_max = 0
    hv_lo, hv_hi = 0.0, 0.0
    max_id = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        images = convert_images(raw.images[start:stop], raw.files.images, start)
        inst, types, q = convert_masks(raw.masks[start:stop], raw.files.masks, start)
        hv = hv_maps(inst)
        quirks.add(q)
        records = nucleus_records(inst, types)
        per_type.update(NUCLEUS_TYPES[t - 1] for t in records.type.tolist())
        nuclei_per_tile[start:stop] = np.bincount(records.tile, minlength=stop - start)
        image_max = max(image_max, int(images.max()) if images.size else 0)
        if hv.size:
            hv_lo, hv_hi = min(hv_lo, float(hv.min())), max(hv_hi, float(hv.max()))
        max_id = max(max_id, int(inst.max()) if inst.size else 0)
        for name, value in (("images", images), ("inst", inst), ("types", types), ("hv", hv)):
            arrays[name][start:stop] = value
        for arr in arrays.values():
            arr.flush()
            release_rows(arr, start, stop)
        release_rows(raw.images, start, stop)
        release_rows(raw.masks, start, stop)
        if progress:
            progress(raw.fold, stop, n)
    if n and image_max <= 1 and raw.images.dtype != np.uint8:
        raise BadInputError(
            f"{raw.files.images}: all image values are within 0..1; expected 0..255 "
            "(scale them by 255 first)"
        )
    for arr in arrays.values():
        arr.flush()
    del arrays
    summary = {
        "tiles": n,
        "height": h,
        "width": w,
        "arrays": {
            "images": {"shape": [n, h, w, 3], "dtype": "uint8", "min": 0, "max": image_max},
            "inst": {"shape": [n, h, w], "dtype": "int32", "min": 0, "max": max_id},
            "types": {"shape": [n, h, w], "dtype": "uint8", "min": 0, "max": len(NUCLEUS_TYPES)},
            "hv": {"shape": [n, 2, h, w], "dtype": "float32", "min": hv_lo, "max": hv_hi},
        },
        "counts": {
            "nuclei": int(nuclei_per_tile.sum()),
            "per_type": {t: per_type.get(t, 0) for t in NUCLEUS_TYPES},
            "per_tissue": dict(sorted(Counter(raw.tissues).items())),
            "empty_tiles": int((nuclei_per_tile == 0).sum()),
        },
    }
    return summary, quirks


def prepare_fold(
    raw: RawFold,
    out: Path,
    force: bool = False,
    chunk: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> FoldReport:
    folder = fold_dir(out, raw.fold)
    t0 = time.perf_counter()
    previous = _previous_manifest(folder)
    old_sources = (previous or {}).get("sources", {})
    sources = {
        name: _source_record(path, old_sources.get(name))
        for name, path in raw.files.sources().items()
    }
    if not force and _up_to_date(previous, sources):
        return FoldReport(
            raw.fold,
            "up to date",
            folder,
            len(raw),
            previous["counts"]["nuclei"],
            previous.get("quirks", {}),
        )
    with staged_dir(folder) as tmp:
        summary, quirks = _convert_fold(raw, tmp, chunk, progress)
        atomic_write_json(tmp / "tissues.json", raw.tissues)
        manifest = {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "cellbench_version": __version__,
            "fold": raw.fold,
            # microseconds: two preparations within one second still differ, so a feature
            # store extracted from the first is seen stale (its source manifest's sha256 moved)
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "layout": raw.files.layout,
            "options": OPTIONS,
            "sources": sources,
            **summary,
            "quirks": quirks.to_dict(),
        }
        # The files written here, for clean (cellbench.ownership); the manifest is written last:
        # a fold folder with a manifest is complete.
        manifest[ownership.FILES_KEY] = ownership.written_files(tmp)
        atomic_write_json(tmp / "manifest.json", manifest)
    return FoldReport(
        raw.fold,
        "prepared",
        folder,
        len(raw),
        summary["counts"]["nuclei"],
        quirks.to_dict(),
        time.perf_counter() - t0,
    )


def _has_store_manifest(path: Path) -> bool:
    try:
        return read_json(path).get("format") == STORE_FORMAT
    except (BadInputError, AttributeError):
        return False


def check_output(out: Path, folds: Sequence[int]) -> None:
    """Refuse an ``out`` whose contents prepare would replace but did not write.

    Preparing replaces ``out/fold<k>`` and ``out/manifest.json``: that is only safe when they are
    absent, empty, or a cellbench store's (a raw PanNuke copy has its own ``fold1/masks.npy``).
    """
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a folder")
    # A store's fold<k>/images.npy looks like the flat raw layout: ask is_store first.
    if not is_store(out) and is_raw_dataset(out):
        raise BadInputError(
            f"{out}: is a raw PanNuke dataset, not a store; choose another --out "
            "(a new folder or an existing cellbench store)"
        )
    manifest = out / "manifest.json"
    if manifest.exists() and not _has_store_manifest(manifest):
        raise BadInputError(f"{manifest}: not a cellbench store manifest; refusing to replace it")
    for fold in folds:
        folder = fold_dir(out, fold)
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            continue
        if not (folder.is_dir() and _has_store_manifest(folder / "manifest.json")):
            raise BadInputError(
                f"{folder}: exists and is not a cellbench store fold (no store manifest.json); "
                "refusing to replace it"
            )
        foreign = ownership.survey(folder, ownership.owned_files(folder) or set()).foreign
        if foreign:  # the fold is replaced whole: it must hold nothing but what prepare wrote
            raise BadInputError(
                f"{foreign[0]}: not written by cellbench, inside store fold {folder} that prepare "
                "would replace; move it out first"
            )
    # Anything else in a non-empty folder is the user's (a raw dataset in a sub-folder, images):
    # a store manifest there would make `clean --cache` take the folder for a cache.
    if out.is_dir() and not ownership.is_store_folder(out):
        entries = [e.name for e in out.iterdir() if not _own_leftover(e.name)]
        if entries:
            raise BadInputError(
                f"{out}: folder is not empty and is not a cellbench store (holds "
                f"{', '.join(sorted(entries)[:3])}); choose a new or empty --out"
            )


def _own_leftover(name: str) -> bool:
    """A staging folder of an interrupted prepare (removed when the fold is prepared again)."""
    staging = ownership.STAGING_RE.fullmatch(name)
    return bool(staging and ownership.FOLD_RE.fullmatch(staging["name"]))


def prepare(
    pannuke: Path,
    out: Path,
    folds: Sequence[int] | None = None,
    force: bool = False,
    chunk: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> list[FoldReport]:
    """Convert the raw folds under ``pannuke`` into the store ``out``.

    ``folds`` None converts the folds found (``Fold k/`` or ``fold<k>/``): a user who downloaded
    only Fold 1 gets a store of fold 1; named folds must all be there.

    Every requested fold is opened and its headers validated before anything is written, so a
    missing fold or a wrong dtype fails fast and leaves the store untouched. An ``out`` holding
    anything but a store is refused (see ``check_output``).
    """
    pannuke, out = Path(pannuke), Path(out)
    if out.resolve() == pannuke.resolve():
        raise BadInputError(f"{out}: output folder must differ from the PanNuke folder")
    if folds is None:
        folds = discover_folds(pannuke)
        if not folds:
            raise BadInputError(
                f"{pannuke}: no PanNuke fold found (expected 'Fold 1/images/fold1/images.npy' "
                "or 'fold1/images.npy')"
            )
    check_output(out, folds)
    raws = [open_raw_fold(pannuke, fold) for fold in folds]
    created = not out.exists()
    reports = []
    try:
        for raw in raws:
            reports.append(prepare_fold(raw, out, force=force, chunk=chunk, progress=progress))
    finally:
        # Folds completed before a failure are complete and stay listed.
        if store_folds(out):
            write_root_manifest(out, __version__)
        elif created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed first fold leaves no empty store folder behind
    return reports
