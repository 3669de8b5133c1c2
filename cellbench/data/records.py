"""Per-nucleus records (tile, type, area) of instance/type maps, for counts and statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellbench.data.targets import global_labels


@dataclass
class NucleusRecords:
    tile: np.ndarray  # int64, index of the tile within the chunk/fold
    type: np.ndarray  # uint8, 1..5 (0 when a nucleus has no type: an inconsistent store)
    area: np.ndarray  # int64, pixels

    def __len__(self) -> int:
        return len(self.tile)

    @staticmethod
    def concat(parts: list[NucleusRecords]) -> NucleusRecords:
        if not parts:
            return NucleusRecords(
                np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64)
            )
        return NucleusRecords(
            np.concatenate([p.tile for p in parts]),
            np.concatenate([p.type for p in parts]),
            np.concatenate([p.area for p in parts]),
        )


def nucleus_records(inst: np.ndarray, types: np.ndarray, tile_offset: int = 0) -> NucleusRecords:
    """One record per nucleus of a chunk (n, H, W).

    The type is the largest type id among the nucleus' pixels: in a valid store every pixel of a
    nucleus has the same type, so this is exact (``check`` reports stores where it is not).
    """
    n = len(inst)
    labels, n_labels = global_labels(inst)
    fg = labels > 0
    lab = labels[fg]
    area = np.bincount(lab, minlength=n_labels + 1)
    kind = np.zeros(n_labels + 1, dtype=np.uint8)
    np.maximum.at(kind, lab, types[fg])
    max_per_tile = inst.reshape(n, -1).max(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    tile_of_label = np.repeat(np.arange(n, dtype=np.int64), max_per_tile)
    present = area[1:] > 0
    return NucleusRecords(
        tile=tile_of_label[present] + tile_offset,
        type=kind[1:][present],
        area=area[1:][present].astype(np.int64),
    )
