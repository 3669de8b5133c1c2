"""Metrics: classification (numpy only). Importing this package stays light (no torch)."""

from cellbench.metrics.classification import (
    ClassificationReport,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_scores,
    top_k_accuracy,
)

__all__ = [
    "ClassificationReport",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "macro_f1",
    "per_class_scores",
    "top_k_accuracy",
]
