"""The confusion-matrix figure: a real PNG, class names on the axes up to 50 classes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cellbench.metrics.plots import MAX_TICK_LABELS, confusion_figure, save_figure


def tick_labels(fig) -> list[str]:
    (ax, *_) = fig.axes
    return [t.get_text() for t in ax.get_xticklabels()]


def test_small_matrix_has_class_names_and_counts(tmp_path):
    cm = np.array([[5, 1], [0, 3]])
    fig = confusion_figure(cm, ["circle", "square"])
    assert tick_labels(fig) == ["circle", "square"]
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"5", "1", "3"} <= texts and "0" not in texts  # empty cells stay blank
    path = save_figure(fig, tmp_path / "eval" / "confusion.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temp file


def test_many_classes_drop_tick_labels():
    n = MAX_TICK_LABELS + 1
    cm = np.eye(n, dtype=int)
    fig = confusion_figure(cm, [f"c{i}" for i in range(n)])
    assert tick_labels(fig) == []
    assert len(fig.axes[0].texts) == 0  # no per-cell counts either


def test_fifty_classes_keep_names():
    n = MAX_TICK_LABELS
    fig = confusion_figure(np.eye(n, dtype=int), [f"c{i}" for i in range(n)])
    assert len(tick_labels(fig)) == n


def test_row_without_samples_is_not_nan():
    cm = np.array([[2, 0], [0, 0]])
    fig = confusion_figure(cm, ["a", "b"])
    data = fig.axes[0].images[0].get_array()
    assert np.isfinite(np.asarray(data)).all()
