"""Predicted maps of a fold -> nuclei -> scores, streamed chunk by chunk.

The model side (torch) yields chunks of predicted maps; this side post-processes them (with a
process pool when ``workers > 1``), scores each tile against the ground truth as it comes, and
hands each tile to an optional sink (the PanNuke export). Nothing holds more than a chunk of
maps, so a PanNuke fold evaluates in bounded memory. ``MapsCache`` keeps a fold's maps on disk
(float16, memory-mapped) for the post-processing search, which re-reads them dozens of times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellbench.data.families import TYPE_CHANNELS
from cellbench.data.npyio import NpyWriter, open_npy
from cellbench.metrics.nuclei import NucleiResult, TileScores, score_tile, summarise
from cellbench.metrics.tile_pool import TilePool
from cellbench.tasks.nuclei.postproc import PostProcParams, iter_postprocess_batches, type_map

# (np_prob (B, H, W), hv (B, 2, H, W), nt_prob (B, 6, H, W) or None), float arrays
MapsChunk = tuple[np.ndarray, np.ndarray, np.ndarray | None]
Nuclei = tuple[np.ndarray, dict[int, tuple[int, float]]]


def centroids(inst: np.ndarray) -> np.ndarray:
    """(K, 2) float centroids [x, y] (x = column, y = row, array index coordinates) of the
    nuclei 1..K of a compact instance map; NaN for an id with no pixel."""
    inst = np.asarray(inst)
    k = int(inst.max())
    labels = inst.ravel().astype(np.int64)
    area = np.bincount(labels, minlength=k + 1).astype(np.float64)
    rows, cols = np.indices(inst.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.bincount(labels, cols.ravel(), k + 1) / area
        y = np.bincount(labels, rows.ravel(), k + 1) / area
    return np.stack([x, y], axis=1)[1:]


def nuclei_of_maps(
    chunks: Iterable[MapsChunk],
    params: PostProcParams,
    workers: int = 1,
    chunk: int = 16,
    pool: TilePool | None = None,
) -> Iterator[Nuclei]:
    """``(inst, {id: (type, probability)})`` per tile, in order. One pool (``pool``, or one of
    ``workers`` processes for this call) post-processes every chunk: the model computes the next
    batch while the workers post-process the previous ones."""
    yield from iter_postprocess_batches(chunks, params, workers=workers, chunk=chunk, pool=pool)


@dataclass
class ScoredSet:
    result: NucleiResult
    tiles: list[TileScores]


def score_nuclei(
    nuclei: Iterable[Nuclei],
    true_inst: np.ndarray,
    true_types: np.ndarray,
    tissues: Sequence[str],
    sink: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoredSet:
    """Score each tile's nuclei against the ground truth (N, H, W arrays, may be memory-mapped);
    ``sink(i, inst, type_map)`` receives every tile (the PanNuke export)."""
    scores: list[TileScores] = []
    n = len(tissues)
    for i, (inst, types) in enumerate(nuclei):
        if i >= n:
            raise ValueError(f"more predicted tiles than the {n} ground-truth tiles")
        kinds = type_map(inst, types)
        scores.append(score_tile(np.asarray(true_inst[i]), np.asarray(true_types[i]), inst, kinds))
        if sink is not None:
            sink(i, inst, kinds)
        if progress is not None:
            progress(i + 1, n)
    if len(scores) != n:
        raise ValueError(f"{len(scores)} predicted tiles for {n} ground-truth tiles")
    return ScoredSet(summarise(scores, list(tissues)), scores)


class MapsCache:
    """A fold's predicted maps on disk as float16 ``.npy`` files, written chunk by chunk and read
    back memory-mapped (float16 keeps probabilities and HV within 1e-3, half the bytes)."""

    NAMES = ("np_prob", "hv", "nt_prob")

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def write(self, chunks: Iterable[MapsChunk], n: int, height: int, width: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shapes = {
            "np_prob": (n, height, width),
            "hv": (n, 2, height, width),
            "nt_prob": (n, TYPE_CHANNELS, height, width),
        }
        writers = {k: NpyWriter(self.folder / f"{k}.npy", np.float16, s) for k, s in shapes.items()}
        try:
            for np_prob, hv, nt_prob in chunks:
                writers["np_prob"].write(np_prob)
                writers["hv"].write(hv)
                writers["nt_prob"].write(nt_prob)
        except BaseException:
            for writer in writers.values():
                writer._fh.close()  # noqa: SLF001 (the cache is discarded by the caller)
            raise
        for writer in writers.values():
            writer.close()

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(open_npy(self.folder / f"{k}.npy") for k in self.NAMES)  # type: ignore[return-value]

    def chunks(self, chunk: int = 16) -> Iterator[MapsChunk]:
        np_prob, hv, nt_prob = self.read()
        for start in range(0, len(np_prob), chunk):
            stop = start + chunk
            yield (
                np.asarray(np_prob[start:stop], np.float32),
                np.asarray(hv[start:stop], np.float32),
                np.asarray(nt_prob[start:stop], np.float32),
            )
