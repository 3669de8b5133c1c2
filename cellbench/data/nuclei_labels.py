"""Nuclei labels of a fold, from PanNuke-format masks or from a canonical store, and the writer
of PanNuke-format masks.

A ``LabelFold`` names its files and reads any range of tiles as (instance map int32, type map
uint8), so the metrics read a fold chunk by chunk (the arrays stay memory-mapped) and a worker
process can open it from its paths alone. Accepted folders (``open_labels``):

- a PanNuke fold folder with ``masks.npy`` (N, H, W, 6) and ``types.npy`` (tissue names), flat
  (``fold3/``) or official (``Fold 3/`` holding ``masks/fold3/masks.npy`` and
  ``images/fold3/types.npy``), or a root holding such folds;
- a canonical store root (``data prepare``/``data synth`` output) or one of its ``fold<k>/``.

PanNuke masks are resolved exactly as ``data prepare`` does (``convert_masks``: the later
channel wins a pixel claimed twice, ids reused across channels are different nuclei), and their
ids are checked there (integers, not negative) chunk by chunk.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellbench.data.convert import convert_masks
from cellbench.data.npyio import NpyWriter, open_npy
from cellbench.data.pannuke import N_MASK_CHANNELS, discover_folds, read_tissues
from cellbench.data.store import is_store, open_fold, store_folds
from cellbench.errors import BadInputError, UsageError
from cellbench.metrics.nuclei_match import compact_labels, instance_types


@dataclass(frozen=True)
class LabelFold:
    """One fold's nuclei labels on disk (paths only: cheap to pickle to a worker)."""

    kind: str  # "pannuke" | "store"
    folder: Path  # the fold folder the user named or that was found under a root
    labels: Path  # masks.npy (pannuke) or inst.npy (store)
    tissue_file: Path  # types.npy (pannuke) or tissues.json (store)
    shape: tuple[int, int, int]  # (N, H, W)
    tissues: tuple[str, ...]
    fold: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Tiles [start, stop) as (inst int32 (n, H, W), types uint8 (n, H, W))."""
        if self.kind == "store":
            inst = np.array(open_npy(self.labels)[start:stop], dtype=np.int32)
            types = np.array(open_npy(self.labels.with_name("types.npy"))[start:stop])
            return inst, types.astype(np.uint8)
        inst, types, _ = convert_masks(open_npy(self.labels)[start:stop], self.labels, start)
        return inst, types


def _fold_number(folder: Path) -> int | None:
    match = re.fullmatch(r"(?:Fold |fold)(\d+)", folder.name)
    return int(match.group(1)) if match else None


def _pannuke_fold(folder: Path, fold: int | None) -> LabelFold:
    flat = folder / "masks.npy"
    if flat.is_file() or not (folder / "masks").is_dir():
        masks_path, types_path = flat, folder / "types.npy"
    else:  # official nesting: Fold k/masks/foldk/masks.npy, Fold k/images/foldk/types.npy
        k = fold if fold is not None else _single_subfolder(folder / "masks")
        masks_path = folder / "masks" / f"fold{k}" / "masks.npy"
        types_path = folder / "images" / f"fold{k}" / "types.npy"
    masks = open_npy(masks_path)  # missing or truncated file: one line naming it
    if masks.ndim != 4 or masks.shape[-1] != N_MASK_CHANNELS:
        raise BadInputError(
            f"{masks_path}: masks have shape {masks.shape}; expected (N, H, W, 6) "
            "(instance ids of the 5 nucleus types in channels 0..4, background in 5)"
        )
    if masks.dtype.kind not in "fiu":
        raise BadInputError(f"{masks_path}: masks have dtype {masks.dtype}; expected numbers")
    tissues = read_tissues(types_path, expected=len(masks), strict=False)
    return LabelFold(
        "pannuke", folder, masks_path, types_path, tuple(masks.shape[:3]), tuple(tissues), fold
    )


def _single_subfolder(folder: Path) -> int:
    numbers = [k for k in (_fold_number(p) for p in folder.iterdir()) if k is not None]
    if len(numbers) != 1:
        raise BadInputError(f"{folder}: expected one fold<k> folder, found {len(numbers)}")
    return numbers[0]


def _store_fold(root: Path, fold: int) -> LabelFold:
    opened = open_fold(root, fold)
    return LabelFold(
        "store",
        opened.path,
        opened.path / "inst.npy",
        opened.path / "tissues.json",
        tuple(opened.inst.shape),
        tuple(opened.tissues),
        fold,
    )


def open_labels(path: Path, folds: list[int] | None = None) -> dict[int | None, LabelFold]:
    """The label folds under ``path``: ``{None: fold}`` for one fold's folder, ``{k: fold}``
    for a root of folds (all of them, or ``folds``)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such folder")
    if not path.is_dir():
        raise BadInputError(f"{path}: not a folder (name the fold folder holding masks.npy)")
    single = (
        (path / "masks.npy").exists() or (path / "masks").is_dir() or (path / "inst.npy").exists()
    )
    if single:
        if folds:
            raise UsageError(f"--folds applies to a folder of folds; {path} is one fold")
        if (path / "inst.npy").exists():
            number = _fold_number(path)
            if number is None:
                raise BadInputError(f"{path}: a store fold folder must be named fold<k>")
            return {None: _store_fold(path.parent, number)}
        return {None: _pannuke_fold(path, _fold_number(path))}
    if is_store(path):
        available, opener = store_folds(path), _store_fold
    else:
        available, opener = discover_folds(path), _pannuke_root_fold
    if not available:
        raise BadInputError(
            f"{path}: no masks.npy, store (inst.npy) or fold folders found; name a fold folder "
            "holding masks.npy and types.npy"
        )
    chosen = folds or available
    missing = [k for k in chosen if k not in available]
    if missing:
        raise BadInputError(
            f"{path}: fold {missing[0]} not found (folds here: {', '.join(map(str, available))})"
        )
    return {k: opener(path, k) for k in chosen}


def _pannuke_root_fold(root: Path, fold: int) -> LabelFold:
    official = root / f"Fold {fold}"
    return _pannuke_fold(official if official.is_dir() else root / f"fold{fold}", fold)


def check_pair(true: LabelFold, pred: LabelFold) -> None:
    """Same tiles, same tile size and same tissues, or one line naming the prediction's file."""
    if true.shape != pred.shape:
        (n, h, w), (pn, ph, pw) = true.shape, pred.shape
        raise BadInputError(
            f"{pred.labels}: {pn} tiles of {ph}x{pw}, but {true.labels} has {n} tiles of {h}x{w}"
        )
    for i, (a, b) in enumerate(zip(true.tissues, pred.tissues, strict=True)):
        if a != b:
            raise BadInputError(
                f"{pred.tissue_file}: tile {i} is '{b}' but {true.tissue_file} says '{a}' "
                "(predictions must be in the ground truth's tile order)"
            )


def pannuke_masks(inst: np.ndarray, types: np.ndarray) -> np.ndarray:
    """PanNuke masks (n, H, W, 6) float64 of instance and type maps (n, H, W): each nucleus's
    id (1..K per tile) in the channel of its type (majority of its pixels), background in 5."""
    out = np.zeros((*inst.shape, N_MASK_CHANNELS), dtype=np.float64)
    for i in range(len(inst)):
        labels, k = compact_labels(inst[i])
        kinds = instance_types(labels, k, types[i])
        if (kinds == 0).any():
            raise ValueError(
                f"tile {i}: {int((kinds == 0).sum())} nuclei without a type (0); PanNuke masks "
                "have one channel per type 1..5"
            )
        labels = labels.reshape(inst.shape[1:])
        channel = np.concatenate([[N_MASK_CHANNELS - 1], kinds - 1])[labels]
        np.put_along_axis(out[i], channel[..., None], labels[..., None].astype(np.float64), -1)
        out[i, ..., N_MASK_CHANNELS - 1] = labels == 0
    return out


class PanNukeWriter:
    """Write one fold of PanNuke-format predictions, ``masks.npy`` and ``types.npy``, chunk by
    chunk. Files are written under temporary names and renamed when every tile is in, so an
    error or Ctrl-C never leaves a half-written fold.

        with PanNukeWriter(folder, tissues, (n, h, w)) as out:
            out.write(inst_chunk, types_chunk)
    """

    def __init__(self, folder: Path, tissues: list[str], shape: tuple[int, int, int]):
        self.folder = Path(folder)
        self.tissues = list(tissues)
        if len(self.tissues) != shape[0]:
            raise ValueError(f"{len(self.tissues)} tissue names for {shape[0]} tiles")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tmp = self.folder / f".masks.npy.tmp-{os.getpid()}"
        self._writer = NpyWriter(self._tmp, np.float64, (*shape, N_MASK_CHANNELS))

    def write(self, inst: np.ndarray, types: np.ndarray) -> None:
        self._writer.write(pannuke_masks(np.asarray(inst), np.asarray(types)))

    def close(self) -> None:
        self._writer.close()  # raises if tiles are missing
        tissues_tmp = self.folder / f".types.npy.tmp-{os.getpid()}.npy"
        np.save(tissues_tmp, np.array(self.tissues))
        os.replace(self._tmp, self.folder / "masks.npy")
        os.replace(tissues_tmp, self.folder / "types.npy")

    def abort(self) -> None:
        self._writer._fh.close()  # noqa: SLF001 (the file is discarded)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PanNukeWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
        else:
            self.abort()


def write_pannuke(
    folder: Path, inst: np.ndarray, types: np.ndarray, tissues: list[str], chunk: int = 64
) -> Path:
    """Write instance and type maps (N, H, W) as a PanNuke fold (``masks.npy``, ``types.npy``)
    in ``folder``; returns the masks path."""
    with PanNukeWriter(folder, tissues, tuple(inst.shape)) as out:
        for start in range(0, len(inst), chunk):
            out.write(inst[start : start + chunk], types[start : start + chunk])
    return Path(folder) / "masks.npy"


__all__ = [
    "LabelFold",
    "PanNukeWriter",
    "check_pair",
    "open_labels",
    "pannuke_masks",
    "write_pannuke",
]
