"""Side-by-side comparison of runs: final and best value of each history metric, and curves.

The seeds compare runs this way (seeds/002: a grid, a refined grid, the best runs' curves on one
plot). Everything comes from the run folders (``history.csv`` and events); nothing is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellbench.runs.direction import metric_is_minimised
from cellbench.runs.history import read_history
from cellbench.runs.layout import RunPaths
from cellbench.runs.summary import RunSummary, summarize

NOT_METRICS = ("epoch", "lr")


def lower_is_better(metric: str) -> bool:
    """The shared rule (``cellbench.runs.direction``), the one early stopping uses."""
    return metric_is_minimised(metric)


@dataclass
class RunCurves:
    run: RunPaths
    summary: RunSummary
    rows: list[dict[str, Any]]

    def series(self, metric: str) -> tuple[list[int], list[float]]:
        # an undefined value (blank, or "nan" in files written before 0.x) is no point at all:
        # it is never a final or a best ("best nan")
        points = [
            (r["epoch"], r[metric])
            for r in self.rows
            if isinstance(r.get(metric), int | float) and math.isfinite(r[metric])
        ]
        return [p[0] for p in points], [p[1] for p in points]


def load_curves(runs: list[RunPaths]) -> list[RunCurves]:
    return [RunCurves(run, summarize(run), read_history(run.history)) for run in runs]


def metric_names(curves: list[RunCurves]) -> list[str]:
    """Every metric column of the runs' histories, in first-seen order."""
    seen: dict[str, None] = {}
    for c in curves:
        for row in c.rows:
            seen.update((k, None) for k in row if k not in NOT_METRICS)
    return list(seen)


def compare(curves: list[RunCurves], metrics: list[str]) -> list[dict[str, Any]]:
    """One record per run: its summary and, per metric, the final and the best value."""
    records = []
    for c in curves:
        values: dict[str, Any] = {}
        for metric in metrics:
            epochs, series = c.series(metric)
            if not series:
                values[metric] = None
                continue
            pick = min if lower_is_better(metric) else max
            best = pick(range(len(series)), key=series.__getitem__)
            values[metric] = {
                "final": series[-1],
                "best": series[best],
                "best_epoch": epochs[best],
            }
        records.append({**c.summary.to_dict(), "metrics": values})
    return records


def plot_curves(curves: list[RunCurves], metrics: list[str], path: str | Path) -> Path:
    """One panel per metric, one line per run; written atomically as a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from cellbench.atomic import atomic_write

    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        for c in curves:
            epochs, series = c.series(metric)
            if series:
                ax.plot(
                    epochs, series, marker="." if len(series) < 30 else None, label=c.run.root.name
                )
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    path = Path(path)
    atomic_write(path, lambda fh: figure.savefig(fh, format="png", dpi=110))
    return path
