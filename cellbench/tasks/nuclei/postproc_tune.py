"""Tune the post-processing parameters on validation predictions, and freeze them into a run.

``tune_postproc`` is a coordinate search: starting from HoVer-Net's defaults, each parameter in
turn takes every value of its candidate list with the others held, the best binary PQ (bPQ,
PanNuke's tissue averaging) is kept, and the sweep over the parameters repeats until a round
changes nothing (or ``rounds`` is reached). A full grid over the six lists would be ~5,000
post-processings of the fold; the coordinate search needs ~30-60 and, the parameters being
nearly separable (the thresholds act on different maps), lands on the same optimum in practice.
A value replaces the current one only when strictly better, so the defaults win ties.

Tuning must only ever see the validation fold (the test fold would leak into the reported
numbers): the caller (``cellbench eval --tune-postproc``) picks the fold; this module records
which one in ``postproc.json`` so every later evaluation can say what it uses.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.data.store import read_json
from cellbench.errors import BadInputError
from cellbench.metrics.nuclei import score_tile, summarise
from cellbench.metrics.tile_pool import TilePool
from cellbench.tasks.nuclei.postproc import PostProcParams, iter_postprocess

POSTPROC_FILE = "postproc.json"

# candidate values per parameter, searched in this order (the thresholds matter most)
SEARCH_SPACE: dict[str, tuple[float | int, ...]] = {
    "np_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "marker_threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "min_object_size": (0, 5, 10, 20, 40),
    "min_marker_size": (2, 5, 10, 20),
    "sobel_size": (5, 11, 21),
    "marker_open_size": (1, 3, 5),
    "blur": (False, True),
}


@dataclass
class Trial:
    params: dict[str, Any]
    bPQ: float


@dataclass
class TuneResult:
    params: PostProcParams
    bPQ: float  # of ``params`` on the tuning tiles
    default_bPQ: float  # of the starting parameters, for comparison
    tiles: int
    trials: list[Trial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params.to_dict(),
            "bPQ": self.bPQ,
            "default_bPQ": self.default_bPQ,
            "tiles": self.tiles,
            "trials": len(self.trials),
        }


def bpq_of(
    params: PostProcParams,
    np_prob: np.ndarray,
    hv: np.ndarray,
    true_inst: np.ndarray,
    tissues: Sequence[str],
    workers: int = 1,
    chunk: int = 16,
    pool: TilePool | None = None,
) -> float:
    """bPQ (PanNuke averaging) of the nuclei ``params`` finds in the predicted maps."""
    scores = [
        score_tile(true_inst[i], None, inst, None)
        for i, (inst, _) in enumerate(
            iter_postprocess(np_prob, hv, None, params, workers=workers, chunk=chunk, pool=pool)
        )
    ]
    return summarise(scores, tissues).bPQ


def tune_postproc(
    np_prob: np.ndarray,
    hv: np.ndarray,
    true_inst: np.ndarray,
    tissues: Sequence[str],
    start: PostProcParams | None = None,
    space: Mapping[str, Sequence[float | int]] = SEARCH_SPACE,
    rounds: int = 2,
    workers: int = 1,
    on_trial: Callable[[Trial], None] | None = None,
    pool: TilePool | None = None,
) -> TuneResult:
    """Best parameters for bPQ on these tiles: ``np_prob`` (N, H, W), ``hv`` (N, 2, H, W),
    ``true_inst`` (N, H, W) and one tissue name per tile. ``on_trial(trial)`` is called after
    each new trial (progress). ``pool`` (else a pool of ``workers`` per trial) runs the
    post-processing. Raises BadInputError when the tiles hold no nucleus."""
    unknown = sorted(set(space) - {f.name for f in dataclasses.fields(PostProcParams)})
    if unknown:
        raise ValueError(f"unknown post-processing parameter '{unknown[0]}' in the search space")
    if not np.asarray(true_inst).any():
        raise BadInputError("post-processing tuning: the tuning tiles hold no nucleus")
    seen: dict[tuple, Trial] = {}

    def evaluate(params: PostProcParams) -> Trial:
        key = tuple(sorted(params.to_dict().items()))
        if key not in seen:
            score = bpq_of(params, np_prob, hv, true_inst, tissues, workers, pool=pool)
            seen[key] = Trial(params.to_dict(), -1.0 if math.isnan(score) else score)
            if on_trial is not None:
                on_trial(seen[key])
        return seen[key]

    best = start or PostProcParams()
    best_trial = evaluate(best)
    default_bpq = best_trial.bPQ
    for _ in range(max(1, rounds)):
        changed = False
        for name, values in space.items():
            for value in values:
                try:
                    candidate = dataclasses.replace(best, **{name: value})
                except ValueError:
                    continue  # a value the current parameters make invalid
                trial = evaluate(candidate)
                if trial.bPQ > best_trial.bPQ + 1e-12:
                    best, best_trial, changed = candidate, trial, True
        if not changed:
            break
    return TuneResult(
        params=best,
        bPQ=best_trial.bPQ,
        default_bPQ=default_bpq,
        tiles=len(np_prob),
        trials=list(seen.values()),
    )


# --------------------------------------------------------------------------- frozen in a run


@dataclass
class FrozenPostProc:
    """Parameters frozen into a run, with where they came from (``postproc.json``)."""

    params: PostProcParams
    path: Path
    info: dict[str, Any]

    def describe(self) -> str:
        """One line for the user: which parameters an evaluation uses, and why."""
        folds = self.info.get("folds")
        where = f"{self.info.get('split', 'val')} fold {','.join(map(str, folds or []))}".strip()
        score = self.info.get("bPQ")
        extra = f", bPQ {score:.4f} there" if isinstance(score, int | float) else ""
        return f"post-processing parameters tuned on the {where}{extra} ({self.path})"


def save_frozen(
    run_root: str | os.PathLike, result: TuneResult, info: Mapping[str, Any]
) -> FrozenPostProc:
    """Write ``<run>/postproc.json`` atomically (a crash leaves the previous file or none)."""
    data = {
        "params": result.params.to_dict(),
        "bPQ": result.bPQ,
        "default_bPQ": result.default_bPQ,
        "tiles": result.tiles,
        "trials": len(result.trials),
        "cellbench_version": __version__,
        **dict(info),
    }
    path = Path(run_root) / POSTPROC_FILE
    atomic_write_json(path, data)
    return FrozenPostProc(result.params, path, data)


def load_frozen(run_root: str | os.PathLike) -> FrozenPostProc | None:
    """The run's frozen parameters, or None when it was never tuned. A damaged file is an
    error naming it (never silently replaced by the defaults)."""
    path = Path(run_root) / POSTPROC_FILE
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "params" not in data:
        raise BadInputError(f"{path}: not a post-processing file (no 'params')")
    params = PostProcParams.from_dict(data["params"], source=str(path))
    return FrozenPostProc(params, path, data)
