"""Raw PanNuke chunks -> canonical arrays, counting the dataset's quirks as it goes.

Raw masks hold one instance-id channel per nucleus type (0..4) plus a background channel (5).
Resolving them into one instance map and one type map meets three known quirks, resolved the
same way every time and counted:
- a pixel claimed by two channels: the later channel wins (PanNuke's own convention);
- an id used in two channels of the same tile: two different nuclei, relabelled apart;
- an id made of several disconnected pieces ("split id"): kept as one nucleus, counted.
Output ids are compact per tile (1..K) in (channel, original id) order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from skimage.measure import label as connected_components

from cellbench.data.targets import global_labels
from cellbench.errors import BadInputError

N_TYPES = 5


@dataclass
class Quirks:
    overlap_pixels: int = 0  # pixels claimed by two or more channels (later channel won)
    overlap_tiles: int = 0
    reused_ids: int = 0  # (tile, id) pairs used by more than one channel (relabelled)
    split_ids: int = 0  # nuclei whose pixels form several connected pieces (kept as one)
    empty_tiles: int = 0  # tiles without any nucleus
    background_mismatch_pixels: int = 0  # background channel disagrees with the nucleus channels

    def add(self, other: Quirks) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def convert_images(images: np.ndarray, path: Path, start: int = 0) -> np.ndarray:
    """A raw image chunk (float 0..255 or uint8) as uint8; NaN/inf or out-of-range -> error."""
    if images.dtype == np.uint8:
        return np.array(images)
    x = np.asarray(images, dtype=np.float64)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise BadInputError(f"{path}: NaN or inf in image of tile {start + int(np.argmax(bad))}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        tile = start + int(np.argmax(((x < 0) | (x > 255)).reshape(len(x), -1).any(axis=1)))
        raise BadInputError(
            f"{path}: image values outside 0..255 (min {lo:g}, max {hi:g}) in tile {tile}"
        )
    return np.rint(x).astype(np.uint8)


def _check_ids(channels: np.ndarray, path: Path, start: int) -> None:
    if channels.dtype.kind == "f":
        finite = np.isfinite(channels)
        if not finite.all():
            tile = start + int(np.argmax(~finite.reshape(len(channels), -1).all(axis=1)))
            raise BadInputError(f"{path}: NaN or inf in masks of tile {tile}")
        if (channels != np.floor(channels)).any():
            raise BadInputError(f"{path}: fractional instance ids in masks (tiles from {start})")
    if channels.size and channels.min() < 0:
        raise BadInputError(f"{path}: negative instance ids in masks (tiles from {start})")


def count_split_ids(inst: np.ndarray) -> int:
    """Number of nuclei (per tile ids) whose pixels form more than one 8-connected piece."""
    labels, n_labels = global_labels(inst)
    if n_labels == 0:
        return 0
    # Ids are unique across tiles after offsetting, so components never join across tiles.
    comps = connected_components(labels, background=0, connectivity=2)
    fg = labels > 0
    _, first = np.unique(comps[fg], return_index=True)
    pieces = np.bincount(labels[fg][first], minlength=n_labels + 1)
    return int((pieces > 1).sum())


def convert_masks(
    masks: np.ndarray, path: Path, start: int = 0
) -> tuple[np.ndarray, np.ndarray, Quirks]:
    """Raw masks (n, H, W, 6) -> inst int32 (n, H, W), types uint8 (n, H, W), quirks."""
    n = len(masks)
    channels = np.asarray(masks[..., :N_TYPES])
    _check_ids(channels, path, start)
    claimed = channels > 0
    n_claims = claimed.sum(axis=-1)
    nucleus = n_claims > 0
    quirks = Quirks()
    overlap = n_claims > 1
    quirks.overlap_pixels = int(overlap.sum())
    quirks.overlap_tiles = int(overlap.reshape(n, -1).any(axis=1).sum())
    per_tile = nucleus.reshape(n, -1).any(axis=1)
    quirks.empty_tiles = int((~per_tile).sum())
    background = np.asarray(masks[..., N_TYPES]) > 0
    quirks.background_mismatch_pixels = int((background == nucleus).sum())

    # The last channel claiming a pixel wins.
    winner = (N_TYPES - 1) - np.argmax(claimed[..., ::-1], axis=-1)
    ids = np.take_along_axis(channels, winner[..., None], axis=-1)[..., 0]
    inst = np.zeros((n,) + masks.shape[1:3], dtype=np.int32)
    types = np.zeros((n,) + masks.shape[1:3], dtype=np.uint8)
    if not nucleus.any():
        return inst, types, quirks
    tile_idx = np.broadcast_to(np.arange(n)[:, None, None], nucleus.shape)[nucleus].astype(np.int64)
    win = winner[nucleus].astype(np.int64)
    old = ids[nucleus].astype(np.int64)
    span = int(old.max()) + 1
    key = (tile_idx * N_TYPES + win) * span + old
    uniq, inverse = np.unique(key, return_inverse=True)
    uniq_tile = uniq // (N_TYPES * span)
    first_of_tile = np.searchsorted(uniq_tile, np.arange(n))
    new_ids = np.arange(len(uniq)) - first_of_tile[uniq_tile] + 1
    inst[nucleus] = new_ids[inverse.ravel()]
    types[nucleus] = (win + 1).astype(np.uint8)
    # Ids reused across channels: the same (tile, id) under more than one winning channel.
    _, per_pair = np.unique(uniq_tile * span + uniq % span, return_counts=True)
    quirks.reused_ids = int((per_pair > 1).sum())
    quirks.split_ids = count_split_ids(inst)
    return inst, types, quirks
