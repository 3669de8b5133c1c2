"""The per-tile contingency table: ids, types, PQ counts, AJI and AJI+ on hand-made tiles."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.metrics.nuclei_match import (
    compact_labels,
    instance_types,
    match_tile,
    pq_from_counts,
)


def blank(size: int = 32) -> np.ndarray:
    return np.zeros((size, size), dtype=np.int32)


def test_compact_labels_renumbers_sparse_and_huge_ids():
    inst = np.array([[0, 7, 7], [1000, 0, 3]])
    labels, k = compact_labels(inst)
    assert k == 3 and labels.tolist() == [0, 2, 2, 3, 0, 1]
    huge = np.array([[0, 2**40], [5, 5]], dtype=np.int64)  # beyond the look-up table
    labels, k = compact_labels(huge)
    assert k == 2 and labels.tolist() == [0, 2, 1, 1]
    assert compact_labels(np.ones((2, 2), np.int32))[1] == 1  # no background at all
    with pytest.raises(ValueError, match=">= 0"):
        compact_labels(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="integers"):
        compact_labels(np.array([[0.5, 0]]))


def test_instance_type_is_the_majority_of_typed_pixels():
    labels = np.array([1, 1, 1, 2, 2, 0])
    types = np.array([3, 3, 1, 0, 0, 0])
    assert instance_types(labels, 2, types).tolist() == [3, 0]  # untyped nucleus -> 0
    with pytest.raises(ValueError, match="0..5"):
        instance_types(labels, 2, np.array([7, 0, 0, 0, 0, 0]))


def test_eroded_nucleus_matches_with_its_iou():
    true, pred = blank(), blank()
    true[5:15, 5:15] = 1  # 100 px
    pred[6:14, 6:14] = 4  # 64 px inside
    m = match_tile(true, pred)
    counts = m.pq()
    assert (counts.tp, counts.fp, counts.fn) == (1, 0, 0)
    assert counts.iou_sum == pytest.approx(0.64)
    assert m.aji() == (64, 100) and m.aji_plus() == (64, 100)
    assert m.dice() == (128, 164)


def test_iou_exactly_one_half_is_not_a_match():
    true, pred = blank(), blank()
    true[0:2, 0:2] = 1  # 4 px
    pred[0:1, 0:2] = 1  # 2 px inside: IoU = 2/4 = 0.5 exactly
    counts = match_tile(true, pred).pq()
    assert (counts.tp, counts.fp, counts.fn, counts.iou_sum) == (0, 1, 1, 0.0)
    pred[1, 0] = 1  # 3 px: IoU 0.75
    assert match_tile(true, pred).pq().tp == 1


def test_merged_nuclei_aji_counts_the_merge_twice_aji_plus_once():
    true, pred = blank(), blank()
    true[2:12, 2:12], true[2:12, 12:22] = 1, 2  # two 100 px nuclei side by side
    pred[2:12, 2:22] = 9  # one 200 px prediction over both: IoU 0.5 with each
    m = match_tile(true, pred)
    counts = m.pq()
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 2)
    assert m.aji() == (200, 400)  # both true nuclei pick it: its pixels counted twice
    assert m.aji_plus() == (100, 300)  # one pair, the other true nucleus unmatched


def test_split_nucleus_one_half_matches():
    true, pred = blank(), blank()
    true[2:12, 2:22] = 1  # 200 px
    pred[2:12, 2:14], pred[2:12, 14:22] = 1, 2  # 120 px (IoU 0.6) and 80 px
    counts = match_tile(true, pred).pq()
    assert (counts.tp, counts.fp, counts.fn) == (1, 1, 0)
    assert pq_from_counts(counts.tp, counts.fp, counts.fn, counts.iou_sum) == pytest.approx(
        (1 / 1.5, 0.6, 0.6 / 1.5)
    )


def test_types_select_sub_tables():
    true, pred = blank(), blank()
    true[0:5, 0:5], true[10:15, 10:15] = 1, 2
    pred[:] = true
    true_types = np.where(true == 1, 1, np.where(true == 2, 3, 0))
    pred_types = np.where(pred > 0, 1, 0)  # the second nucleus predicted as type 1
    m = match_tile(true, pred, true_types, pred_types)
    assert m.true_types.tolist() == [1, 3] and m.pred_types.tolist() == [1, 1]
    type1 = m.pq(1, 1)
    assert (type1.tp, type1.fp, type1.fn) == (1, 1, 0)
    type3 = m.pq(3, 3)
    assert (type3.tp, type3.fp, type3.fn) == (0, 0, 1)


def test_empty_maps_never_divide_by_zero():
    empty = blank()
    one = blank()
    one[3:6, 3:6] = 5
    assert match_tile(empty, empty).pq().as_array().tolist() == [0, 0, 0, 0]
    assert np.isnan(pq_from_counts(0, 0, 0, 0.0)).all()
    m = match_tile(empty, one)
    assert (m.pq().fp, m.aji(), m.dice()) == (1, (0, 9), (0, 9))
    m = match_tile(one, empty)
    assert (m.pq().fn, m.aji_plus()) == (1, (0, 9))


def test_threshold_below_one_half_uses_an_assignment():
    true, pred = blank(), blank()
    true[0:10, 0:10] = 1
    pred[0:10, 0:4], pred[0:10, 4:10] = 1, 2  # IoU 0.4 and 0.6
    assert match_tile(true, pred).pq(threshold=0.3).tp == 1  # one-to-one even below 0.5
    assert match_tile(true, pred).pq(threshold=0.3).iou_sum == pytest.approx(0.6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        match_tile(blank(8), blank(9))
