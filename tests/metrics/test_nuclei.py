"""Nuclei metrics of a set: PanNuke's averaging, skip rules, and a cross-check against MONAI and
HoVer-Net's per-pair definitions on generated, perturbed tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench.data.perturb import Perturbation, perturb_tile, perturb_tiles
from cellbench.metrics.nuclei import score_set, score_tile, score_tiles, summarise


def square_tile(boxes, size=40):
    """Instance and type maps from ``(y0, y1, x0, x1, type)`` boxes, ids 1..K."""
    inst = np.zeros((size, size), np.int32)
    types = np.zeros((size, size), np.uint8)
    for k, (y0, y1, x0, x1, t) in enumerate(boxes, start=1):
        inst[y0:y1, x0:x1], types[y0:y1, x0:x1] = k, t
    return inst, types


TWO = [(2, 12, 2, 12, 1), (20, 30, 20, 30, 2)]  # a neoplastic and an inflammatory 10x10 nucleus


def test_identity_scores_one_everywhere(tiles):
    inst, types, tissues = tiles
    result = score_set(inst, types, inst, types, tissues)
    data = result.to_dict()
    for key in ("bPQ", "mPQ", "bPQ_image_avg", "mPQ_image_avg", "mPQ_plus", "bDQ", "bSQ"):
        assert data[key] == 1.0, key
    assert data["dice"] == data["aji"] == data["aji_plus"] == 1.0
    assert all(v["PQ"] in (1.0, None) for v in data["per_type"].values())
    assert data["true_nuclei"] == data["pred_nuclei"] > 0


def test_eroded_and_dilated_nuclei():
    true = square_tile([(5, 15, 5, 15, 1)])
    eroded = square_tile([(6, 14, 6, 14, 1)])  # 64 of 100 px
    dilated = square_tile([(4, 16, 4, 16, 1)])  # 144 px around 100
    r = summarise([score_tile(*true, *eroded)], ["Breast"])
    assert r.bPQ == pytest.approx(0.64) and r.mPQ == pytest.approx(0.64)
    assert r.dice == pytest.approx(128 / 164) and r.aji == pytest.approx(0.64)
    r = summarise([score_tile(*true, *dilated)], ["Breast"])
    assert r.bPQ == pytest.approx(100 / 144) and r.bDQ == 1.0


def test_dropped_merged_and_split_nuclei():
    true = square_tile(TWO)
    dropped = square_tile(TWO[:1])
    s = score_tile(*true, *dropped)
    assert s.pq_values()[0] == pytest.approx(2 / 3)  # DQ 1/(1 + 0.5), SQ 1
    assert s.pq_values()[1:3].tolist() == [1.0, 0.0]  # the inflammatory one is missed
    assert s.mpq() == pytest.approx(0.5)
    # 12x10 + 8x10 merged into one 20x10 prediction: IoU 0.6 with the larger
    merged_true = square_tile([(0, 10, 0, 12, 1), (0, 10, 12, 20, 1)])
    merged = square_tile([(0, 10, 0, 20, 1)])
    assert score_tile(*merged_true, *merged).pq_values()[0] == pytest.approx(0.6 / 1.5)
    # and the reverse: one true nucleus split in two predictions
    assert score_tile(*merged, *merged_true).pq_values()[0] == pytest.approx(0.6 / 1.5)


def test_swapped_types_keep_bpq_and_zero_mpq():
    true = square_tile(TWO)
    swapped = square_tile([(2, 12, 2, 12, 2), (20, 30, 20, 30, 1)])
    r = summarise([score_tile(*true, *swapped)], ["Colon"])
    assert r.bPQ == 1.0 and r.mPQ == 0.0 and r.mPQ_plus == 0.0
    assert r.per_type["Neoplastic"]["fn"] == 1 and r.per_type["Neoplastic"]["fp"] == 1


def test_type_only_in_the_prediction_is_skipped_by_mpq_but_not_mpq_plus():
    true = square_tile(TWO)
    extra = square_tile([*TWO, (32, 38, 2, 8, 3)])  # a connective nucleus the truth lacks
    r = summarise([score_tile(*true, *extra)], ["Colon"])
    assert r.mPQ == 1.0  # connective: absent from the truth, its false positive unpenalised
    assert r.per_type["Connective"]["PQ"] != r.per_type["Connective"]["PQ"]  # NaN: not scored
    assert r.to_dict()["per_type"]["Connective"]["PQ"] is None
    assert r.per_type["Connective"]["PQ_plus"] == 0.0  # pooled: it counts
    assert r.mPQ_plus == pytest.approx(2 / 3)
    assert r.bPQ == pytest.approx(2 / 2.5)  # binary: one false positive


def test_empty_truth_empty_prediction_and_both_empty():
    true = square_tile(TWO)
    empty = square_tile([])
    r = summarise([score_tile(*empty, *true)], ["Skin"])  # nuclei predicted on an empty tile
    data = r.to_dict()
    assert data["bPQ"] is None and data["mPQ"] is None and data["mPQ_plus"] == 0.0
    assert data["dice"] == 0.0 and data["aji"] == 0.0
    r = summarise([score_tile(*true, *empty)], ["Skin"])  # nothing predicted
    assert (r.bPQ, r.mPQ, r.dice, r.aji, r.aji_plus) == (0.0, 0.0, 0.0, 0.0, 0.0)
    data = summarise([score_tile(*empty, *empty)], ["Skin"]).to_dict()
    assert data["bPQ"] is None and data["dice"] is None and data["aji"] is None
    assert "NaN" not in json.dumps(data)
    assert summarise([], []).to_dict()["bPQ"] is None


def test_pannuke_averages_per_tissue_then_over_tissues():
    true = square_tile(TWO)
    half = square_tile([(2, 12, 2, 12, 1)])  # bPQ 2/3 against TWO
    empty = square_tile([])
    scores = [
        score_tile(*true, *true),  # Breast: 1
        score_tile(*true, *empty),  # Colon: 0
        score_tile(*true, *half),  # Colon: 2/3
        score_tile(*empty, *half),  # Colon: empty truth, skipped
    ]
    r = summarise(scores, ["Breast", "Colon", "Colon", "Colon"])
    assert r.per_tissue["Colon"]["bPQ"] == pytest.approx(1 / 3)
    assert r.per_tissue["Colon"]["tiles"] == 3
    assert r.bPQ == pytest.approx((1 + 1 / 3) / 2)  # tissues weigh the same
    assert r.bPQ_image_avg == pytest.approx((1 + 0 + 2 / 3) / 3)  # images weigh the same
    assert r.bPQ != pytest.approx(r.bPQ_image_avg)
    assert r.image_bpq.shape == (4,) and np.isnan(r.image_bpq[3])


def test_sparse_ids_score_like_compact_ones(tiles):
    inst, types, _ = tiles
    pred, pred_types = perturb_tile(inst[0], types[0], np.random.default_rng(1))
    sparse = np.where(pred > 0, pred * 97 + 100_000, 0)
    a = score_tile(inst[0], types[0], pred, pred_types)
    b = score_tile(inst[0], types[0], sparse, pred_types)
    np.testing.assert_array_equal(a.pq, b.pq)
    assert (a.aji, a.aji_plus, a.dice) == (b.aji, b.aji_plus, b.dice)


# --- independent references -------------------------------------------------------------------


def reference_aji(true, pred, plus=False):
    """HoVer-Net's get_fast_aji / get_fast_aji_plus, written out per pair of nuclei."""
    from scipy.optimize import linear_sum_assignment

    true_ids = [i for i in np.unique(true) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    inter = np.zeros((len(true_ids), len(pred_ids)))
    union = np.zeros_like(inter)
    for a, t in enumerate(true_ids):
        for b, p in enumerate(pred_ids):
            tm, pm = true == t, pred == p
            inter[a, b] = (tm & pm).sum()
            union[a, b] = (tm | pm).sum()
    iou = inter / (union + 1e-6)
    if plus:
        rows, cols = linear_sum_assignment(-iou)
    else:
        rows, cols = np.arange(len(true_ids)), iou.argmax(axis=1)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    total_inter, total_union = inter[rows, cols].sum(), union[rows, cols].sum()
    total_union += sum((true == true_ids[a]).sum() for a in set(range(len(true_ids))) - set(rows))
    total_union += sum((pred == pred_ids[b]).sum() for b in set(range(len(pred_ids))) - set(cols))
    return total_inter / total_union


@pytest.fixture(scope="module")
def perturbed(tiles):
    inst, types, tissues = tiles
    heavy = Perturbation(erode=0.2, dilate=0.2, drop=0.1, split=0.15, merge=0.15, retype=0.15)
    pred, pred_types = perturb_tiles(inst, types, seed=5, how=heavy)
    return inst, types, pred, pred_types, tissues


def test_pq_dice_and_aji_agree_with_monai_and_hovernet(perturbed):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    inst, types, pred, pred_types, _ = perturbed
    scores = score_tiles(inst, types, pred, pred_types)
    checked = 0
    for i, s in enumerate(scores):
        if s.n_true == 0:
            continue
        checked += 1
        # MONAI: tp, fp, fn and IoU sum of all nuclei (IoU > 0.5, like ours)
        tp, fp, fn, iou_sum = monai_metrics.compute_panoptic_quality(
            torch.as_tensor(pred[i]), torch.as_tensor(inst[i]), output_confusion_matrix=True
        ).tolist()
        assert s.pq[0, :3].tolist() == [tp, fp, fn]
        assert s.pq[0, 3] == pytest.approx(iou_sum, rel=1e-5)
        # and per type, on the type's own instance maps
        for t in range(1, 6):
            true_t = np.where(types[i] == t, inst[i], 0)
            pred_t = np.where(pred_types[i] == t, pred[i], 0)
            monai_t = monai_metrics.compute_panoptic_quality(
                torch.as_tensor(pred_t), torch.as_tensor(true_t), output_confusion_matrix=True
            ).tolist()
            assert s.pq[t, :3].tolist() == monai_t[:3]
        dice = monai_metrics.compute_dice(
            torch.as_tensor(pred[i] > 0)[None, None].float(),
            torch.as_tensor(inst[i] > 0)[None, None].float(),
        ).item()
        assert s.dice[0] / s.dice[1] == pytest.approx(dice, rel=1e-5)
        assert s.aji[0] / s.aji[1] == pytest.approx(reference_aji(inst[i], pred[i]))
        assert s.aji_plus[0] / s.aji_plus[1] == pytest.approx(
            reference_aji(inst[i], pred[i], plus=True)
        )
    assert checked >= 5
    # the perturbation really hurt: the check compared non-trivial numbers
    assert 0.2 < summarise(scores, perturbed[4]).bPQ < 0.95
