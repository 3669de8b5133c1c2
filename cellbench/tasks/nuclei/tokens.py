"""Nuclei tiles with their frozen-backbone tokens: what the nuclei decoder trains on.

Each item is a ``NucleiDataset`` item (image, np, hv, types, inst, tissue, fold, tile) plus
either ``tokens`` float16 (L, G, G, D), read from the feature store's memory-mapped
``tokens.npy`` (one tile at a time: memory is bounded by the batch, never the fold), or, for
``--online-features``, ``raw`` uint8 (H, W, 3): the tile as the backbone's own preprocessing
wants it, so the model runs the frozen backbone on the (augmented) image.

Augmentation draws one symmetry of the square per item and applies it to the image, the targets
(HV signs flipped and channels swapped with the geometry, ``cellbench.data.augment``) and the
token grid together. A flipped token grid is *not* what the backbone would give for the flipped
image (a ViT is not equivariant to flips: its patch embedding and position embeddings are not),
so with cached tokens the decoder learns from geometrically consistent but synthetic inputs;
with ``--online-features`` the tokens are the backbone's of the augmented tile (and colour jitter
reaches them too). docs/nuclei.md says what to expect of each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cellbench.data.augment import NucleiAugment
from cellbench.data.npyio import open_npy, release_rows
from cellbench.errors import BadInputError
from cellbench.tasks.nuclei.dataset import NucleiDataset, item_rng

TOKEN_AXES = (1, 2)  # (rows, columns) of a tile's token array (L, G, G, D)


class NucleiTokenDataset(Dataset):
    def __init__(
        self,
        tiles: NucleiDataset,
        token_files: Mapping[int, str | Path] | None,
        augment: NucleiAugment | None = None,
    ):
        """``tiles``: the canonical store's tiles (without augmentation of their own);
        ``token_files``: fold -> ``tokens.npy`` (N, L, G, G, D) of that fold, or None for
        online features (items carry ``raw`` instead of ``tokens``)."""
        if tiles.augment is not None:
            raise ValueError("augment the token dataset, not its tiles (one draw for both)")
        self.tiles = tiles
        self.token_files = {k: Path(v) for k, v in (token_files or {}).items()}
        self.online = token_files is None
        self.augment = augment
        self._open: dict[int, np.ndarray] = {}
        self._pid = os.getpid()
        for fold, path in self.token_files.items():
            tokens = open_npy(path)
            tiles_in_fold = len(tiles._fold(fold).tissues)
            if tokens.ndim != 5 or tokens.shape[2] != tokens.shape[3]:
                raise BadInputError(f"{path}: expected tokens (N, L, G, G, D), got {tokens.shape}")
            if len(tokens) != tiles_in_fold:
                raise BadInputError(
                    f"{path}: {len(tokens)} tiles of tokens for {tiles_in_fold} tiles in fold "
                    f"{fold} of {tiles.root} (features of another store?)"
                )

    @property
    def token_shape(self) -> tuple[int, ...] | None:
        """(L, G, G, D) of the stored tokens; None online."""
        if self.online:
            return None
        return tuple(self._tokens(next(iter(self.token_files))).shape[1:])

    def __len__(self) -> int:
        return len(self.tiles)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}  # memory maps are reopened in each DataLoader worker
        return state

    def _tokens(self, fold: int) -> np.ndarray:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if fold not in self._open:
            self._open[fold] = open_npy(self.token_files[fold])
        return self._open[fold]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.tiles.sample(i)
        fold, tile = self.tiles.index[i]
        tokens = None
        if not self.online:  # one tile copied out of the map, its pages dropped from our RSS
            stored = self._tokens(fold)
            tokens = np.array(stored[tile])
            release_rows(stored, tile, tile + 1)
        if self.augment is not None:
            rng = item_rng()
            geometry = self.augment.draw_geometry(rng)
            s = self.augment.jitter(geometry.apply(s), rng)
            if tokens is not None:
                tokens = geometry.apply_grid(tokens, TOKEN_AXES)
        item = self.tiles.to_item(i, s)
        if tokens is not None:
            item["tokens"] = torch.from_numpy(np.array(tokens, dtype=np.float16))
        else:
            raw = np.clip(np.rint(np.asarray(s.image, dtype=np.float32)), 0, 255)
            item["raw"] = torch.from_numpy(np.ascontiguousarray(raw.astype(np.uint8)))
        return item
