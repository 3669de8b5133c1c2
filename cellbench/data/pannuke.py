"""Raw PanNuke folds: find the files, memory-map them, validate what the headers can tell.

Two layouts are accepted for fold k under a root folder:
- official: ``Fold k/images/foldk/images.npy``, ``Fold k/images/foldk/types.npy``,
  ``Fold k/masks/foldk/masks.npy``
- flat: ``foldk/images.npy``, ``foldk/masks.npy``, ``foldk/types.npy``

Arrays stay memory-mapped (masks are ~8 GB per fold); data-level checks (NaN, ranges, quirks) are
done chunk by chunk by ``prepare`` and ``check``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellbench.data.families import NUCLEUS_TYPES, TISSUES
from cellbench.data.npyio import open_npy
from cellbench.errors import BadInputError

N_MASK_CHANNELS = len(NUCLEUS_TYPES) + 1  # the types' instance ids, then background
IMAGE_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.uint8))


@dataclass(frozen=True)
class FoldFiles:
    fold: int
    layout: str  # "official" | "flat"
    images: Path
    masks: Path
    types: Path

    def sources(self) -> dict[str, Path]:
        return {"images": self.images, "masks": self.masks, "types": self.types}


def _candidates(root: Path, fold: int) -> list[FoldFiles]:
    official = root / f"Fold {fold}"
    flat = root / f"fold{fold}"
    return [
        FoldFiles(
            fold,
            "official",
            official / "images" / f"fold{fold}" / "images.npy",
            official / "masks" / f"fold{fold}" / "masks.npy",
            official / "images" / f"fold{fold}" / "types.npy",
        ),
        FoldFiles(fold, "flat", flat / "images.npy", flat / "masks.npy", flat / "types.npy"),
    ]


def find_fold(root: Path, fold: int) -> FoldFiles:
    """The files of fold ``fold`` in either layout, or BadInputError naming what is missing."""
    root = Path(root)
    for files in _candidates(root, fold):
        if files.images.parent.is_dir() or files.masks.parent.is_dir():
            for path in (files.images, files.masks, files.types):
                if not path.is_file():
                    raise BadInputError(f"{path}: missing file of fold {fold}")
            return files
    raise BadInputError(
        f"{root}: fold {fold} not found (looked for 'Fold {fold}/images/fold{fold}/images.npy' "
        f"and 'fold{fold}/images.npy')"
    )


def discover_folds(root: Path) -> list[int]:
    """Fold numbers present under ``root`` in either layout."""
    found = set()
    for child in Path(root).iterdir() if Path(root).is_dir() else ():
        match = re.fullmatch(r"(?:Fold |fold)(\d+)", child.name)
        if match and child.is_dir():
            found.add(int(match.group(1)))
    return sorted(found)


def is_raw_dataset(root: Path) -> bool:
    return any(
        files.images.is_file() for fold in discover_folds(root) for files in _candidates(root, fold)
    )


def read_tissues(path: Path, expected: int | None = None, strict: bool = True) -> list[str]:
    """Tissue names of a types.npy, checked for length (and known names when ``strict``)."""
    arr = open_npy(path)
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise BadInputError(
            f"{path}: expected a 1-D array of tissue names, got {arr.dtype} {arr.shape}"
        )
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(arr).tolist()]
    if expected is not None and len(names) != expected:
        raise BadInputError(f"{path}: {len(names)} tissue names for {expected} images")
    if strict:
        unknown = sorted(set(names) - set(TISSUES))
        if unknown:
            raise BadInputError(
                f"{path}: unknown tissue name '{unknown[0]}' ({len(unknown)} unknown)"
            )
    return names


@dataclass
class RawFold:
    files: FoldFiles
    images: np.ndarray  # (N, H, W, 3), memory-mapped
    masks: np.ndarray  # (N, H, W, 6), memory-mapped
    tissues: list[str] = field(default_factory=list)

    @property
    def fold(self) -> int:
        return self.files.fold

    def __len__(self) -> int:
        return len(self.images)


def check_image_header(path: Path, images: np.ndarray) -> None:
    if images.dtype == np.int8:
        raise BadInputError(
            f"{path}: images are int8 (values above 127 wrap to negatives); expected float64 "
            "0..255 or uint8"
        )
    if images.dtype not in IMAGE_DTYPES:
        raise BadInputError(f"{path}: images have dtype {images.dtype}; expected float64 or uint8")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise BadInputError(f"{path}: images have shape {images.shape}; expected (N, H, W, 3)")
    if 0 in images.shape:
        # a fold of no tile (or of 0-pixel tiles) would be prepared, checked "ok" and then fail
        # every training or evaluation that reads it
        raise BadInputError(f"{path}: images have shape {images.shape}: the fold holds no tile")


def check_mask_header(path: Path, masks: np.ndarray, images_shape: tuple[int, ...]) -> None:
    if masks.ndim != 4:
        raise BadInputError(f"{path}: masks have shape {masks.shape}; expected (N, H, W, 6)")
    if masks.shape[-1] != N_MASK_CHANNELS:
        raise BadInputError(
            f"{path}: masks have {masks.shape[-1]} channels; expected 6 "
            "(0..4 nucleus types, 5 background)"
        )
    if masks.dtype.kind not in "fiu":
        raise BadInputError(f"{path}: masks have dtype {masks.dtype}; expected numbers")
    if masks.shape[:3] != tuple(images_shape[:3]):
        raise BadInputError(
            f"{path}: masks shape {masks.shape[:3]} does not match images {tuple(images_shape[:3])}"
        )


def open_raw_fold(root: Path, fold: int, strict_tissues: bool = True) -> RawFold:
    """Memory-map one raw fold after checking headers, shapes, dtypes and tissue names."""
    files = find_fold(root, fold)
    images = open_npy(files.images)
    check_image_header(files.images, images)
    masks = open_npy(files.masks)
    check_mask_header(files.masks, masks, images.shape)
    tissues = read_tissues(files.types, expected=len(images), strict=strict_tissues)
    return RawFold(files=files, images=images, masks=masks, tissues=tissues)
