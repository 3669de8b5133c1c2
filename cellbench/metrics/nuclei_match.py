"""One contingency table per tile: every overlap between true and predicted nuclei at once.

PQ, AJI, AJI+ and per-type PQ all start from the pixels each (true, predicted) pair of nuclei
shares. HoVer-Net's and PanNuke's reference code make one full-image pass per overlapping pair
(O(pairs x pixels)). Here ids are compacted to 0..K and a single ``np.bincount`` over the paired
ids ``true * (P + 1) + pred`` counts every pair in one pass over the pixels; the nuclei areas are
its row and column sums. Everything else is arithmetic on a (T, P) matrix of a few thousand
cells (see benchmarks/bench_nuclei_metrics.py for the speed-up).

Matching rule (PanNuke-metrics ``get_fast_pq``, HoVer-Net, MONAI): a true and a predicted nucleus
match when their IoU is strictly greater than the threshold (0.5). Above 0.5 a match is
necessarily unique (two disjoint predictions cannot both cover more than half of one union), so
no assignment step is needed; an IoU of exactly 0.5 is not a match. Below 0.5, as in HoVer-Net,
pairs are chosen by a maximum-IoU assignment (``scipy.optimize.linear_sum_assignment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.optimize import linear_sum_assignment

from cellbench.data.families import TYPE_CHANNELS

N_CLASSES = TYPE_CHANNELS  # type ids 0 (background / untyped) and 1..5 (NUCLEUS_TYPES)
# A look-up table of size max(id) + 1 is cheaper than np.unique's sort, unless ids are huge.
_LUT_LIMIT = 1 << 22


def compact_labels(inst: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids of ``inst`` (any shape) renumbered 1..K in increasing order (0 stays 0), flattened
    to int64, and K."""
    flat = np.asarray(inst).ravel()
    if flat.size == 0:
        return flat.astype(np.int64), 0
    if flat.dtype.kind not in "iub":
        raise ValueError(f"instance ids must be integers, got dtype {flat.dtype}")
    low, top = int(flat.min()), int(flat.max())
    if low < 0:
        raise ValueError(f"instance ids must be >= 0, got {low}")
    if top < _LUT_LIMIT:
        present = np.zeros(top + 1, dtype=bool)
        present[flat] = True
        present[0] = False
        lut = np.cumsum(present) * present  # id -> its rank among the present ids
        return lut[flat], int(present.sum())
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        return inverse.astype(np.int64), len(ids) - 1
    return inverse.astype(np.int64) + 1, len(ids)


def instance_types(labels: np.ndarray, k: int, type_map: np.ndarray | None) -> np.ndarray:
    """Type (0..5) of each of the ``k`` compact nuclei: majority vote of the type map over its
    pixels, ignoring type 0; lowest type on a tie; 0 when none of its pixels is typed."""
    if type_map is None or k == 0:
        return np.zeros(k, dtype=np.int64)
    t = np.asarray(type_map).ravel().astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= N_CLASSES):
        raise ValueError(f"type ids must lie in 0..{N_CLASSES - 1}, got {t.min()}..{t.max()}")
    votes = np.bincount(labels * N_CLASSES + t, minlength=(k + 1) * N_CLASSES)
    votes = votes.reshape(k + 1, N_CLASSES)[1:, 1:]
    return np.where(votes.any(axis=1), votes.argmax(axis=1) + 1, 0)


@dataclass
class PQCounts:
    """Matched pairs, unmatched predictions and unmatched true nuclei, and the IoU sum of the
    matched pairs: enough to compute DQ, SQ and PQ, and to pool over images (mPQ+)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([self.tp, self.fp, self.fn, self.iou_sum], dtype=np.float64)


def pq_from_counts(tp: float, fp: float, fn: float, iou_sum: float) -> tuple[float, float, float]:
    """(DQ, SQ, PQ); NaN when there is nothing to score (no true and no predicted nucleus).

    PanNuke-metrics divides SQ by ``tp + 1e-6``; we divide exactly, so identity gives 1 rather
    than 0.999999 (the two differ by at most 1e-6 relative).
    """
    denominator = tp + 0.5 * fp + 0.5 * fn
    if denominator == 0:
        return float("nan"), float("nan"), float("nan")
    dq = tp / denominator
    sq = iou_sum / tp if tp else 0.0
    return dq, sq, iou_sum / denominator


@dataclass
class TileMatch:
    """The overlaps of one tile's true and predicted nuclei (compact ids, 1-based in the maps,
    0-based in the arrays)."""

    inter: np.ndarray  # (T, P) pixels shared by true nucleus i and predicted nucleus j
    true_area: np.ndarray  # (T,)
    pred_area: np.ndarray  # (P,)
    true_types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,) 0..5
    pred_types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (P,) 0..5

    @property
    def n_true(self) -> int:
        return len(self.true_area)

    @property
    def n_pred(self) -> int:
        return len(self.pred_area)

    @cached_property
    def union(self) -> np.ndarray:
        return self.true_area[:, None] + self.pred_area[None, :] - self.inter

    @cached_property
    def iou(self) -> np.ndarray:
        # union >= area of either nucleus >= 1, so never 0/0
        return self.inter / self.union

    def pq(
        self, true_type: int | None = None, pred_type: int | None = None, threshold: float = 0.5
    ) -> PQCounts:
        """Panoptic counts of all nuclei, or of the true nuclei of ``true_type`` against the
        predicted nuclei of ``pred_type`` (a type's own instance maps: the same nuclei, hence
        the same IoUs, as the sub-matrix of the whole-tile table)."""
        iou = self.iou
        if true_type is not None:
            iou = iou[self.true_types == true_type]
        if pred_type is not None:
            iou = iou[:, self.pred_types == pred_type]
        n_true, n_pred = iou.shape
        if n_true == 0 or n_pred == 0:
            return PQCounts(0, n_pred, n_true, 0.0)
        if threshold >= 0.5:
            paired_iou = iou[iou > threshold]  # strict: IoU exactly 0.5 is no match
        else:
            rows, cols = linear_sum_assignment(-iou)
            paired_iou = iou[rows, cols]
            paired_iou = paired_iou[paired_iou > threshold]
        tp = len(paired_iou)
        return PQCounts(tp, n_pred - tp, n_true - tp, float(paired_iou.sum()))

    def aji(self) -> tuple[int, int]:
        """(intersection, union) of AJI (Kumar et al. 2017) as HoVer-Net's ``get_fast_aji``:
        each true nucleus takes the prediction of highest IoU (a prediction may serve several),
        unmatched true and unused predicted nuclei add their area to the union."""
        if self.n_true == 0 or self.n_pred == 0:
            return 0, int(self.true_area.sum() + self.pred_area.sum())
        # the same 1e-6 as get_fast_aji, so that ties break the same way
        iou = self.inter / (self.union + 1.0e-6)
        best = iou.argmax(axis=1)
        paired = iou[np.arange(self.n_true), best] > 0
        return self._joined(np.flatnonzero(paired), best[paired])

    def aji_plus(self) -> tuple[int, int]:
        """(intersection, union) of AJI+ (HoVer-Net's ``get_fast_aji_plus``): one-to-one pairs by
        maximum-IoU assignment, so no prediction is counted twice."""
        if self.n_true == 0 or self.n_pred == 0:
            return 0, int(self.true_area.sum() + self.pred_area.sum())
        iou = self.inter / (self.union + 1.0e-6)
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] > 0
        return self._joined(rows[keep], cols[keep])

    def _joined(self, rows: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
        inter = int(self.inter[rows, cols].sum())
        union = int(self.union[rows, cols].sum())
        true_unpaired = np.ones(self.n_true, dtype=bool)
        true_unpaired[rows] = False
        pred_unused = np.ones(self.n_pred, dtype=bool)
        pred_unused[cols] = False
        union += int(self.true_area[true_unpaired].sum() + self.pred_area[pred_unused].sum())
        return inter, union

    def dice(self) -> tuple[int, int]:
        """(2 x shared foreground pixels, true + predicted foreground pixels) of binary Dice."""
        return 2 * int(self.inter.sum()), int(self.true_area.sum() + self.pred_area.sum())


def match_tile(
    true_inst: np.ndarray,
    pred_inst: np.ndarray,
    true_type_map: np.ndarray | None = None,
    pred_type_map: np.ndarray | None = None,
) -> TileMatch:
    """The contingency table of one tile's true and predicted instance maps (H, W), any
    non-negative integer ids (not necessarily contiguous), and the type of each nucleus."""
    if np.shape(true_inst) != np.shape(pred_inst):
        raise ValueError(
            f"true and predicted maps differ in shape: {np.shape(true_inst)} vs "
            f"{np.shape(pred_inst)}"
        )
    t, n_true = compact_labels(true_inst)
    p, n_pred = compact_labels(pred_inst)
    table = np.bincount(t * (n_pred + 1) + p, minlength=(n_true + 1) * (n_pred + 1))
    table = table.reshape(n_true + 1, n_pred + 1)
    return TileMatch(
        inter=table[1:, 1:],
        true_area=table[1:].sum(axis=1),
        pred_area=table[:, 1:].sum(axis=0),
        true_types=instance_types(t, n_true, true_type_map),
        pred_types=instance_types(p, n_pred, pred_type_map),
    )
