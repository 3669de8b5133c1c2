"""Score label folds read from disk (PanNuke masks or a store), chunk by chunk, in parallel.

Workers receive only the folds' paths and a tile range and read the tiles themselves, so
nothing large crosses a process boundary and memory stays bounded by ``chunk`` tiles per
worker whatever the fold size (PanNuke masks are ~8 GB per fold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cellbench.data.nuclei_labels import LabelFold, check_pair
from cellbench.metrics.nuclei import NucleiResult, TileScores, json_safe, score_tiles, summarise
from cellbench.metrics.tile_pool import TilePool, chunk_bounds, map_chunks


def _score_chunk(task: tuple[LabelFold, LabelFold, int, int]) -> list[TileScores]:
    true, pred, start, stop = task
    true_inst, true_types = true.read(start, stop)
    pred_inst, pred_types = pred.read(start, stop)
    return score_tiles(true_inst, true_types, pred_inst, pred_types)


@dataclass
class FoldScores:
    true: LabelFold
    pred: LabelFold
    result: NucleiResult
    tiles: list[TileScores]


def score_folds(
    true: LabelFold,
    pred: LabelFold,
    workers: int = 1,
    chunk: int = 32,
    progress: Callable[[int, int], None] | None = None,
    pool: TilePool | None = None,
) -> FoldScores:
    """Every tile of ``pred`` scored against ``true`` (checked to pair up first), on ``pool``
    (one for all the folds of a command) or on a pool of ``workers`` made for this fold."""
    check_pair(true, pred)
    tiles: list[TileScores] = []
    tasks = ((true, pred, start, stop) for start, stop in chunk_bounds(len(true), chunk))
    for scores in map_chunks(_score_chunk, tasks, workers, pool=pool):
        tiles.extend(scores)
        if progress:
            progress(len(tiles), len(true))
    return FoldScores(true, pred, summarise(tiles, list(true.tissues)), tiles)


def _mean_tree(items: Sequence[Any]) -> Any:
    """Average nested dicts leaf by leaf: floats averaged over the folds that scored them
    (None skipped), integer counts summed."""
    first = items[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(i, dict) for i in items)]
        keys += sorted({k for i in items for k in i} - set(keys))
        return {k: _mean_tree([i[k] for i in items if k in i]) for k in keys}
    if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        return sum(items)
    numbers = [i for i in items if isinstance(i, int | float) and not isinstance(i, bool)]
    if len(numbers) != len([i for i in items if i is not None]):
        return first
    return sum(numbers) / len(numbers) if numbers else None


def combine_folds(folds: dict[int | None, FoldScores]) -> dict[str, Any]:
    """One JSON-safe summary. One fold: its result. Several: each fold's result under
    ``folds`` and, at the top level, their mean (papers quote PanNuke's three-fold mean)."""
    results = {k: json_safe(v.result.to_dict()) for k, v in folds.items()}
    if len(results) == 1:
        return next(iter(results.values()))
    combined = _mean_tree(list(results.values()))
    combined["iou_threshold"] = next(iter(results.values()))["iou_threshold"]
    combined["folds"] = {str(k): v for k, v in results.items()}
    return combined
