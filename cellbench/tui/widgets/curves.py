"""Curves of a run: losses (the logged step losses faint under train_loss and val_loss per
epoch), each loss term, each metric, the lr; and the compare screen's overlay of several runs."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from cellbench.tui.watch import RunWatcher

MAX_STEP_POINTS = 600  # more points than terminal columns only slows the plot down


def thin(xs: list[float], ys: list[float], limit: int = MAX_STEP_POINTS):
    """At most ``limit`` points: the mean of consecutive buckets (keeps the trend, not noise)."""
    if len(xs) <= limit:
        return xs, ys
    size = -(-len(xs) // limit)
    out_x, out_y = [], []
    for i in range(0, len(xs), size):
        chunk_x, chunk_y = xs[i : i + size], ys[i : i + size]
        out_x.append(sum(chunk_x) / len(chunk_x))
        out_y.append(sum(chunk_y) / len(chunk_y))
    return out_x, out_y


def epoch_ticks(xmax: float, most: int = 8) -> list[int]:
    """Whole epochs 0, step, 2·step... with step 1, 2, 5, 10, 20, 50...: no "37.5" epochs."""
    scale = 1
    while True:
        for step in (scale, 2 * scale, 5 * scale):
            if xmax / step <= most:
                return list(range(0, int(xmax) + 1, step))
        scale *= 10


COLOURS = ("blue", "orange", "green", "magenta", "cyan", "red", "yellow", "white")


def positive(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The points a log scale can draw (values > 0)."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
    return [p[0] for p in points], [p[1] for p in points]


def draw_series(plt, series, log: bool) -> float:
    """Plot ``(label, xs, ys)`` lines in the palette's order; returns the largest x."""
    xmax = 1.0
    for i, (label, xs, ys) in enumerate(series):
        if log:
            xs, ys = positive(xs, ys)
        if not xs:
            continue
        # one point per epoch: a marker keeps a single epoch visible, lines join the rest
        plt.plot(xs, ys, marker="hd", color=COLOURS[i % len(COLOURS)], label=label)
        xmax = max(xmax, *xs)
    return xmax


def finish_axes(plt, xmax: float, log: bool) -> None:
    plt.xlim(0, xmax)
    ticks = epoch_ticks(xmax)
    plt.xticks(ticks, [str(t) for t in ticks])
    if log:
        plt.yscale("log")


class MetricCurves(PlotextPlot):
    """One of the run's curves (``RunWatcher.curve_names``): ``loss`` (train/val per epoch over
    the faint step losses), a loss term, a metric or the lr; the monitored metric's best epoch
    marked. ``log`` draws the y axis on a log scale."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choice = "loss"
        self.log_scale = False

    def show(self, watcher: RunWatcher) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("epoch")
        names = watcher.curve_names()
        if self.choice not in names:
            self.choice = "loss"
        series = watcher.curve(self.choice)
        step_x, step_y = thin(*watcher.step_curve()) if self.choice == "loss" else ([], [])
        if self.log_scale:
            step_x, step_y = positive(step_x, step_y)
        if not (step_x or any(xs for _, xs, _ in series)):
            plt.title(f"{self.choice}: nothing logged yet")
            self.refresh()
            return
        if step_x:
            plt.plot(step_x, step_y, marker="braille", color="gray", label="step")
        xmax = max(draw_series(plt, series, self.log_scale), *step_x, 1.0)
        self._mark_best(plt, watcher, series)
        finish_axes(plt, xmax, self.log_scale)
        index = names.index(self.choice) + 1
        plt.title(f"{self.choice} ({index}/{len(names)})" + (" · log" if self.log_scale else ""))
        self.refresh()

    def _mark_best(self, plt, watcher: RunWatcher, series) -> None:
        best = watcher.best or {}
        if best.get("metric") not in [label for label, _, _ in series]:
            return
        epoch, value = best.get("epoch"), best.get("value")
        if isinstance(epoch, int) and isinstance(value, int | float) and math.isfinite(value):
            if self.log_scale and value <= 0:
                return
            plt.scatter([epoch], [value], marker="x", color="red", label=f"best @{epoch}")
