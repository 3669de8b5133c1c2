"""Nuclei metrics of a set of tiles: bPQ, mPQ with PanNuke's averaging, mPQ+, Dice, AJI, AJI+.

Per tile (``score_tile``) a handful of counts are kept, so a whole fold is summarised without
holding any map. ``summarise`` then applies the averaging rules of the PanNuke evaluation
(``compute_stats.py`` of PanNuke-metrics), which papers quote (docs/metrics.md):

- PQ of a class in an image: NaN (skipped) when the ground truth has no nucleus of that class,
  so false positives of a class absent from the image cost nothing; 0 when it has some and none
  is found. bPQ of an image treats all nuclei as one class (a tile without nuclei is skipped);
- mPQ of an image: mean over its scored types;
- PanNuke averaging (``bPQ``, ``mPQ``): mean over the images of each tissue, then mean over the
  tissues. ``*_image_avg``: mean over images (what CellViT's scripts print; CellViT issues #25
  and #81: the two differ by about 0.01 on the same predictions);
- mPQ+ (CoNIC): TP, FP, FN and IoU sums pooled over the whole set per type, PQ of each type,
  then the mean over the types; here false positives always count;
- Dice (binary), AJI, AJI+: per image, then the mean over the images where they are defined
  (a tile with no true and no predicted nucleus is skipped).

Nothing here needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from cellbench.data.families import NUCLEUS_TYPES
from cellbench.metrics.nuclei_match import match_tile, pq_from_counts

IOU_THRESHOLD = 0.5


@dataclass
class TileScores:
    """What one tile contributes to every metric of the set."""

    # rows: 0 = all nuclei (binary), 1..5 = NUCLEUS_TYPES; columns: tp, fp, fn, iou_sum
    pq: np.ndarray
    true_present: np.ndarray  # (6,) bool: the ground truth has nuclei of that row
    dice: tuple[int, int]  # (2 x shared foreground, true + predicted foreground)
    aji: tuple[int, int]  # (intersection, union)
    aji_plus: tuple[int, int]
    n_true: int = 0
    n_pred: int = 0

    def pq_values(self) -> np.ndarray:
        """PQ of each row, NaN where the ground truth has no nucleus of it (PanNuke's rule)."""
        values = np.array([pq_from_counts(*row)[2] for row in self.pq])
        return np.where(self.true_present, values, np.nan)

    def mpq(self) -> float:
        return _nanmean(self.pq_values()[1:])


def score_tile(
    true_inst: np.ndarray,
    true_types: np.ndarray | None,
    pred_inst: np.ndarray,
    pred_types: np.ndarray | None,
    threshold: float = IOU_THRESHOLD,
) -> TileScores:
    """Scores of one tile from instance maps (H, W) and type maps (H, W) with 0 = background,
    1..5 = NUCLEUS_TYPES (a nucleus takes the majority type of its pixels)."""
    match = match_tile(true_inst, pred_inst, true_types, pred_types)
    rows = [match.pq(threshold=threshold)]
    rows += [match.pq(t, t, threshold) for t in range(1, len(NUCLEUS_TYPES) + 1)]
    present = [match.n_true > 0]
    present += [bool((match.true_types == t).any()) for t in range(1, len(NUCLEUS_TYPES) + 1)]
    return TileScores(
        pq=np.stack([row.as_array() for row in rows]),
        true_present=np.array(present),
        dice=match.dice(),
        aji=match.aji(),
        aji_plus=match.aji_plus(),
        n_true=match.n_true,
        n_pred=match.n_pred,
    )


def score_tiles(
    true_inst: np.ndarray,
    true_types: np.ndarray | None,
    pred_inst: np.ndarray,
    pred_types: np.ndarray | None,
    threshold: float = IOU_THRESHOLD,
) -> list[TileScores]:
    """``score_tile`` over a stack of tiles (N, H, W)."""
    if np.shape(true_inst) != np.shape(pred_inst):
        raise ValueError(
            f"true and predicted maps differ in shape: {np.shape(true_inst)} vs "
            f"{np.shape(pred_inst)}"
        )
    return [
        score_tile(
            true_inst[i],
            None if true_types is None else true_types[i],
            pred_inst[i],
            None if pred_types is None else pred_types[i],
            threshold,
        )
        for i in range(len(true_inst))
    ]


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none (and no RuntimeWarning)."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _ratio_mean(pairs: Iterable[tuple[int, int]]) -> float:
    return _nanmean(num / den for num, den in pairs if den > 0)


def json_safe(value: Any) -> Any:
    """Floats, NaN as None, numpy scalars as Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


@dataclass
class NucleiResult:
    """Scores of a set of tiles. Floats are NaN where nothing could be scored; ``to_dict`` turns
    them into None."""

    bPQ: float  # PanNuke: per tissue, then mean over tissues
    mPQ: float
    bPQ_image_avg: float  # mean over images (CellViT's printout)
    mPQ_image_avg: float
    mPQ_plus: float  # pooled over the set per type (CoNIC)
    bDQ: float  # image averages of the binary detection and segmentation quality
    bSQ: float
    dice: float
    aji: float
    aji_plus: float
    per_type: dict[str, dict[str, float | int]]
    per_tissue: dict[str, dict[str, float | int]]
    tiles: int
    true_nuclei: int
    pred_nuclei: int
    iou_threshold: float = IOU_THRESHOLD
    image_bpq: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    image_mpq: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary, headline numbers first (no per-image arrays)."""
        return json_safe({f.name: getattr(self, f.name) for f in fields(self) if f.repr})


def summarise(scores: Sequence[TileScores], tissues: Sequence[str]) -> NucleiResult:
    """The set's metrics from its tiles' scores and tissue names (one per tile)."""
    if len(scores) != len(tissues):
        raise ValueError(f"{len(scores)} tile scores for {len(tissues)} tissue names")
    n = len(scores)
    pq_img = np.array([s.pq_values() for s in scores]).reshape(n, 1 + len(NUCLEUS_TYPES))
    bpq_img = pq_img[:, 0]
    mpq_img = np.array([_nanmean(row[1:]) for row in pq_img])
    counts = np.array([s.pq for s in scores]).reshape(n, 1 + len(NUCLEUS_TYPES), 4)
    pooled = counts.sum(axis=0)

    per_tissue: dict[str, dict[str, float | int]] = {}
    for tissue in sorted(set(tissues)):
        idx = [i for i, name in enumerate(tissues) if name == tissue]
        per_tissue[tissue] = {
            "tiles": len(idx),
            "bPQ": _nanmean(bpq_img[idx]),
            "mPQ": _nanmean(mpq_img[idx]),
        }

    per_type: dict[str, dict[str, float | int]] = {}
    for t, name in enumerate(NUCLEUS_TYPES, start=1):
        tp, fp, fn, iou_sum = pooled[t]
        per_type[name] = {
            "PQ": _nanmean(pq_img[:, t]),  # PanNuke: mean over the images that have the type
            "PQ_plus": pq_from_counts(tp, fp, fn, iou_sum)[2],
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "images": int(np.isfinite(pq_img[:, t]).sum()),
        }

    binary = [pq_from_counts(*s.pq[0]) if s.true_present[0] else (math.nan,) * 3 for s in scores]
    return NucleiResult(
        bPQ=_nanmean(v["bPQ"] for v in per_tissue.values()),
        mPQ=_nanmean(v["mPQ"] for v in per_tissue.values()),
        bPQ_image_avg=_nanmean(bpq_img),
        mPQ_image_avg=_nanmean(mpq_img),
        mPQ_plus=_nanmean(v["PQ_plus"] for v in per_type.values()),
        bDQ=_nanmean(b[0] for b in binary),
        bSQ=_nanmean(b[1] for b in binary),
        dice=_ratio_mean(s.dice for s in scores),
        aji=_ratio_mean(s.aji for s in scores),
        aji_plus=_ratio_mean(s.aji_plus for s in scores),
        per_type=per_type,
        per_tissue=per_tissue,
        tiles=n,
        true_nuclei=sum(s.n_true for s in scores),
        pred_nuclei=sum(s.n_pred for s in scores),
        image_bpq=bpq_img,
        image_mpq=mpq_img,
    )


def score_set(
    true_inst: np.ndarray,
    true_types: np.ndarray | None,
    pred_inst: np.ndarray,
    pred_types: np.ndarray | None,
    tissues: Sequence[str],
    threshold: float = IOU_THRESHOLD,
) -> NucleiResult:
    """Score a whole set held in arrays (N, H, W) in this process. For folds on disk, or with
    several worker processes, see ``cellbench.metrics.nuclei_folds.score_sources``."""
    return summarise(score_tiles(true_inst, true_types, pred_inst, pred_types, threshold), tissues)
