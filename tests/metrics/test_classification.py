"""Classification metrics against hand-computed cases and invariants (no sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellbench.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_scores,
    top_k_accuracy,
)

# y_true = 0 0 1 1 2 2 ; y_pred = 0 1 1 1 2 0
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def one_hot_scores(pred: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[pred]


def test_confusion_matrix_hand_case():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.dtype == np.int64


def test_per_class_scores_hand_case():
    scores = per_class_scores(confusion_matrix(Y_TRUE, Y_PRED, 3))
    np.testing.assert_allclose(scores["precision"], [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(scores["recall"], [1 / 2, 1.0, 1 / 2])
    np.testing.assert_allclose(scores["f1"], [0.5, 0.8, 2 / 3])
    assert scores["support"].tolist() == [2, 2, 2]


def test_accuracy_and_macro_f1_hand_case():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_never_predicted_class_has_zero_precision_not_nan():
    # class 2 is never predicted and never true -> left out of the macro average
    # class 1 is true once and never predicted -> precision 0, recall 0, f1 0
    y_true = np.array([0, 0, 1])
    y_pred = np.array([0, 0, 0])
    report = classification_report(y_true, one_hot_scores(y_pred, 3), ["a", "b", "c"])
    assert report.precision.tolist() == [pytest.approx(2 / 3), 0.0, 0.0]
    assert report.recall.tolist() == [1.0, 0.0, 0.0]
    f1_a = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert report.macro_f1 == pytest.approx(f1_a / 2)  # over classes a and b only
    assert report.balanced_accuracy == pytest.approx(0.5)
    assert all(math.isfinite(v) for v in report.metrics().values())


def test_top_k_hand_case():
    scores = np.array(
        [
            [0.1, 0.7, 0.2],  # true 2: second best -> top2 yes, top1 no
            [0.6, 0.3, 0.1],  # true 0: best
            [0.5, 0.3, 0.2],  # true 2: last -> top2 no
            [0.2, 0.3, 0.5],  # true 1: second -> top2 yes
        ]
    )
    y_true = np.array([2, 0, 2, 1])
    assert top_k_accuracy(y_true, scores, 1) == pytest.approx(1 / 4)
    assert top_k_accuracy(y_true, scores, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(y_true, scores, 3) == 1.0


def test_report_top_k_only_when_k_below_num_classes():
    scores = np.random.default_rng(0).random((10, 3))
    y = np.arange(10) % 3
    assert "top5_accuracy" not in classification_report(y, scores).metrics()
    scores6 = np.random.default_rng(0).random((10, 6))
    assert "top5_accuracy" in classification_report(y, scores6).metrics()


def test_report_to_dict_is_json_ready():
    import json

    report = classification_report(Y_TRUE, one_hot_scores(Y_PRED, 3), ["cat", "dog", "owl"])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["accuracy"] == pytest.approx(4 / 6)
    assert data["num_samples"] == 6
    assert [row["class"] for row in data["per_class"]] == ["cat", "dog", "owl"]
    assert data["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_empty_input_gives_nan_not_error():
    report = classification_report(np.zeros(0, dtype=int), np.zeros((0, 3)))
    assert math.isnan(report.accuracy)
    assert report.confusion.sum() == 0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1], [0], "differ in length"),
        ([0, 3], [0, 1], r"\[0, 3\)"),
        ([0.0, 1.0], [0, 1], "integer"),
    ],
)
def test_bad_labels_are_rejected(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(y_true, y_pred, 3)


def test_wrong_number_of_class_names_is_rejected():
    with pytest.raises(ValueError, match="2 class names for 3"):
        classification_report([0], np.zeros((1, 3)), ["a", "b"])


labels_and_scores = st.integers(2, 7).flatmap(
    lambda c: st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.just(c),
            st.lists(st.integers(0, c - 1), min_size=n, max_size=n),
            st.lists(
                # distinct scores per row: argmax ties would make class renaming matter
                st.lists(st.floats(-5, 5, allow_nan=False), min_size=c, max_size=c, unique=True),
                min_size=n,
                max_size=n,
            ),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(labels_and_scores)
def test_invariants(case):
    num_classes, y_list, score_list = case
    y = np.array(y_list)
    scores = np.array(score_list)
    report = classification_report(y, scores, top_k=range(1, num_classes + 1))
    cm = report.confusion
    pred = scores.argmax(axis=1)
    # the matrix counts every sample once; its diagonal is the accuracy
    assert cm.sum() == y.size
    assert cm.sum(axis=1).tolist() == np.bincount(y, minlength=num_classes).tolist()
    assert report.accuracy == pytest.approx(np.trace(cm) / y.size)
    assert report.accuracy == pytest.approx(float((pred == y).mean()))
    for value in (report.macro_f1, report.macro_precision, report.macro_recall):
        assert 0.0 <= value <= 1.0
    # top-k never decreases with k, and top-1 is at least argmax accuracy (ties count as hits)
    top = [report.top_k[k] for k in sorted(report.top_k)]
    assert all(a <= b + 1e-12 for a, b in zip(top, top[1:], strict=False))
    assert top[0] >= report.accuracy - 1e-12
    # renaming the classes (a permutation applied to labels and score columns) changes nothing
    perm = np.random.default_rng(0).permutation(num_classes)
    permuted = classification_report(perm[y], scores[:, np.argsort(perm)])
    assert permuted.accuracy == pytest.approx(report.accuracy)
    assert permuted.macro_f1 == pytest.approx(report.macro_f1)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_perfect_predictions_score_one(num_classes, raw):
    y = np.array(raw) % num_classes
    report = classification_report(y, one_hot_scores(y, num_classes))
    assert report.accuracy == 1.0
    assert report.macro_f1 == 1.0
    assert report.balanced_accuracy == 1.0
    assert np.array_equal(np.diag(report.confusion), np.bincount(y, minlength=num_classes))
