"""Figures of metrics (matplotlib, Agg canvas: no display, no global backend switch)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellbench.atomic import atomic_write

MAX_TICK_LABELS = 50  # beyond this, class names overlap into an unreadable band
MAX_CELL_COUNTS = 20  # beyond this, counts in the cells are too small to read


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix"):
    """Row-normalised confusion matrix (colour = share of the true class), counts in the cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    n = cm.shape[0]
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    side = float(np.clip(2.0 + 0.32 * n, 4.5, 20.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_title(title)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= MAX_TICK_LABELS:
        ticks = np.arange(n)
        ax.set_xticks(ticks, labels=list(class_names), rotation=90 if n > 8 else 45, ha="center")
        ax.set_yticks(ticks, labels=list(class_names))
        fontsize = 8 if n > 20 else 10
        ax.tick_params(labelsize=fontsize)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if n <= MAX_CELL_COUNTS:
        for (i, j), count in np.ndenumerate(cm):
            if count:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), mode="wb")
