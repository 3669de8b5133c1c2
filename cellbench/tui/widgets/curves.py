"""Loss curves: the logged step losses (faint) under train_loss and val_loss per epoch."""

from __future__ import annotations

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


class LossCurves(PlotextPlot):
    def show(self, watcher: RunWatcher) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("epoch")
        step_x, step_y = thin(*watcher.step_curve())
        train_x, train_y = watcher.epoch_curve("train_loss")
        val_x, val_y = watcher.epoch_curve("val_loss")
        if not (step_x or train_x or val_x):
            plt.title("loss: nothing logged yet")
            self.refresh()
            return
        if step_x:
            plt.plot(step_x, step_y, marker="braille", color="gray", label="step")
        # one point per epoch: a marker keeps a single epoch visible, lines join the rest
        if train_x:
            plt.plot(train_x, train_y, marker="hd", color="blue", label="train_loss")
        if val_x:
            plt.plot(val_x, val_y, marker="hd", color="orange", label="val_loss")
        xmax = max([*step_x, *train_x, *val_x, 1.0])
        plt.xlim(0, xmax)
        ticks = epoch_ticks(xmax)
        plt.xticks(ticks, [str(t) for t in ticks])
        self.refresh()
