"""Classification metrics from integer labels and class scores, in numpy (no torch).

Everything derives from one confusion matrix built with a single ``np.bincount``, so the cost is
O(N + C^2) whatever the number of classes. Conventions (the same as scikit-learn's defaults):

- the confusion matrix has true classes on rows and predicted classes on columns;
- a class that is never predicted has precision 0, a class absent from ``y_true`` has recall 0
  (no division-by-zero warnings, no NaN);
- macro averages (F1, precision, recall) are taken over the classes that occur in ``y_true`` or
  in the predictions: a class absent from both (common in a small validation split) says nothing
  about the model and would only drag the average toward 0;
- top-k accuracy counts a sample as correct when fewer than ``k`` classes score strictly higher
  than its true class. It is reported only for ``k < C`` (for ``k >= C`` it is always 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _labels(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_range(arr: np.ndarray, num_classes: int, name: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name}: class indices must lie in [0, {num_classes}), got {arr.min()}..{arr.max()}"
        )


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, ``cm[t, p]`` = samples of true class t predicted as p."""
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    _check_range(t, num_classes, "y_true")
    _check_range(p, num_classes, "y_pred")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(y_true: Any, y_pred: Any) -> float:
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    return float((t == p).mean()) if t.size else float("nan")


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support.astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _present(cm: np.ndarray) -> np.ndarray:
    """Classes that occur in y_true or in the predictions."""
    return (cm.sum(axis=0) + cm.sum(axis=1)) > 0


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    present = _present(cm)
    if not present.any():
        return float("nan")
    return float(per_class_scores(cm)["f1"][present].mean())


def top_k_accuracy(y_true: Any, scores: Any, k: int) -> float:
    """Share of samples whose true class is among the ``k`` highest scores."""
    t = _labels(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != t.size:
        raise ValueError(f"scores: expected shape ({t.size}, C), got {s.shape}")
    _check_range(t, s.shape[1], "y_true")
    if not t.size:
        return float("nan")
    true_score = s[np.arange(t.size), t]
    rank = (s > true_score[:, None]).sum(axis=1)  # classes that beat the true one
    return float((rank < k).mean())


@dataclass
class ClassificationReport:
    """Every classification metric of one split, with a JSON-ready ``to_dict``."""

    class_names: list[str]
    confusion: np.ndarray
    accuracy: float
    macro_f1: float
    macro_precision: float
    macro_recall: float
    balanced_accuracy: float  # mean recall over the classes present in y_true
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    top_k: dict[int, float] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.support.sum())

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, keyed as the rest of cellbench names them."""
        out = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "balanced_accuracy": self.balanced_accuracy,
        }
        out.update({f"top{k}_accuracy": v for k, v in self.top_k.items()})
        return out

    def per_class(self) -> list[dict[str, Any]]:
        return [
            {
                "class": name,
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(self.class_names)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics(),
            "num_samples": self.num_samples,
            "per_class": self.per_class(),
            "confusion_matrix": self.confusion.tolist(),
            "classes": list(self.class_names),
        }


def classification_report(
    y_true: Any,
    scores: Any,
    class_names: Sequence[str] | None = None,
    top_k: Sequence[int] = (5,),
) -> ClassificationReport:
    """All metrics from true labels and (N, C) scores (logits or probabilities).

    Predictions are ``argmax(scores)``. ``top_k`` values with ``k >= C`` are skipped.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores: expected shape (N, C), got {s.shape}")
    num_classes = s.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} score columns")
    t = _labels(y_true, "y_true")
    pred = s.argmax(axis=1) if s.shape[0] else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(t, pred, num_classes)
    scores_per_class = per_class_scores(cm)
    present = _present(cm)
    in_truth = scores_per_class["support"] > 0

    def _mean(values: np.ndarray, mask: np.ndarray) -> float:
        return float(values[mask].mean()) if mask.any() else float("nan")

    return ClassificationReport(
        class_names=names,
        confusion=cm,
        accuracy=accuracy(t, pred),
        macro_f1=_mean(scores_per_class["f1"], present),
        macro_precision=_mean(scores_per_class["precision"], present),
        macro_recall=_mean(scores_per_class["recall"], present),
        balanced_accuracy=_mean(scores_per_class["recall"], in_truth),
        precision=scores_per_class["precision"],
        recall=scores_per_class["recall"],
        f1=scores_per_class["f1"],
        support=scores_per_class["support"],
        top_k={k: top_k_accuracy(t, s, k) for k in top_k if 0 < k < num_classes},
    )
