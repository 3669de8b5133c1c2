"""Torch dataset over the canonical nuclei store: image, NP, HV, type map, tissue.

Memory maps are opened lazily in each process (DataLoader workers included) rather than pickled
with the dataset, so workers share the page cache instead of copying arrays.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cellbench.data.augment import NucleiAugment, NucleiSample
from cellbench.data.families import TISSUES, tiles_for_family
from cellbench.data.npyio import release_rows
from cellbench.data.store import StoreFold, open_fold
from cellbench.errors import BadInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def item_rng() -> np.random.Generator:
    """A numpy generator seeded from torch, so torch.manual_seed and DataLoader worker seeding
    govern augmentation."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class NucleiDataset(Dataset):
    """Tiles of some folds of a store, optionally one organ family, optionally augmented.

    Each item is a dict:
      image  float32 (3, H, W), (x / 255 - mean) / std
      np     int64 (H, W), 1 on nucleus pixels
      hv     float32 (2, H, W), channel 0 = x, 1 = y, in [-1, 1]
      types  int64 (H, W), 0 = background, 1..5 = Neoplastic..Epithelial
      inst   int64 (H, W), instance ids (for evaluation)
      tissue int64 (), index into ``TISSUES``
      fold, tile  int64 (), where the tile comes from
    """

    def __init__(
        self,
        store_root: str | Path,
        folds: Sequence[int],
        family: str | None = None,
        augment: NucleiAugment | bool | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        families: Mapping[str, Sequence[str]] | None = None,
        max_samples: int | None = None,
    ):
        self.root = Path(store_root)
        self.folds = tuple(folds)
        self.family = family
        self.augment = NucleiAugment() if augment is True else (augment or None)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.index: list[tuple[int, int]] = []
        self.tissues: list[str] = []
        for fold in self.folds:
            f = open_fold(self.root, fold)  # validates dtypes and shapes up front
            for tile in tiles_for_family(f.tissues, family, families):
                self.index.append((fold, tile))
                self.tissues.append(f.tissues[tile])
        if max_samples is not None:
            self.index = self.index[:max_samples]
            self.tissues = self.tissues[:max_samples]
        unknown = sorted(set(self.tissues) - set(TISSUES))
        if unknown:
            raise BadInputError(f"{self.root}: unknown tissue name '{unknown[0]}' in tissues.json")
        self._open: dict[int, StoreFold] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}  # never pickle memory maps; reopen in the worker
        return state

    def _fold(self, fold: int) -> StoreFold:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if fold not in self._open:
            self._open[fold] = open_fold(self.root, fold)
        return self._open[fold]

    def sample(self, i: int) -> NucleiSample:
        """The stored arrays of item ``i`` (no augmentation, no normalisation).

        Copies, not views of the read-only memory maps: tensors made from them must be writable
        (torch warns otherwise, and an in-place op would write into a read-only mapping).
        """
        fold, tile = self.index[i]
        f = self._fold(fold)
        sample = NucleiSample(
            image=np.array(f.images[tile]),
            inst=np.array(f.inst[tile]),
            types=np.array(f.types[tile]),
            hv=np.array(f.hv[tile]),
        )
        # the copies are ours: drop the mapped pages from our RSS, or an epoch leaves the whole
        # fold counted in it (bench_nuclei_train.py: peak RSS x1.24 with a 4x store without this)
        for array in (f.images, f.inst, f.types, f.hv):
            release_rows(array, tile, tile + 1)
        return sample

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.sample(i)
        if self.augment is not None:
            s = self.augment(s, item_rng())
        return self.to_item(i, s)

    def to_item(self, i: int, s: NucleiSample) -> dict[str, torch.Tensor]:
        """The item dict of tile ``i`` from its (possibly augmented) sample."""
        image = np.ascontiguousarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        image = (image - self.mean) / self.std
        fold, tile = self.index[i]
        inst = np.ascontiguousarray(s.inst, dtype=np.int64)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "np": torch.from_numpy((inst > 0).astype(np.int64)),
            "hv": torch.from_numpy(np.ascontiguousarray(s.hv, dtype=np.float32)),
            "types": torch.from_numpy(np.ascontiguousarray(s.types, dtype=np.int64)),
            "inst": torch.from_numpy(inst),
            "tissue": torch.tensor(TISSUES.index(self.tissues[i])),
            "fold": torch.tensor(fold),
            "tile": torch.tensor(tile),
        }
