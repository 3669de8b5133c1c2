"""Memory of the selected run: CUDA allocated/reserved/peak when the run had a GPU, else RSS."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from cellbench.tui import format as fmt
from cellbench.tui.watch import RunWatcher

NEAR_FULL = 0.92  # as the engine's checks.gpu_memory_fraction default
BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int, top: float) -> str:
    """One character per reading (the last ``width``), scaled from 0 to ``top``: a steady
    800 MB reads as a flat full bar, not as noise blown up to the whole height."""
    values = values[-width:]
    if top <= 0:
        return ""
    steps = len(BLOCKS) - 1
    return "".join(BLOCKS[max(1, min(steps, round(v / top * steps)))] for v in values)


class MemoryPanel(Static):
    _watcher: RunWatcher | None = None

    def on_resize(self) -> None:
        if self._watcher is not None:
            self.show(self._watcher)  # the sparkline is as wide as the panel

    def show(self, watcher: RunWatcher) -> None:
        self._watcher = watcher
        readings = watcher.state.memory
        if not readings:
            self.update(Text("memory: no reading yet (one per epoch)", style="dim"))
            return
        last = readings[-1]
        line = Text()
        if last.cuda:
            peak = max(r.peak or 0 for r in readings)
            line.append(f"GPU {last.device} ", style="bold")
            line.append(
                f"allocated {fmt.size(last.allocated)} · reserved {fmt.size(last.reserved)} · "
                f"peak {fmt.size(peak)}"
            )
            line.append(f" · process RSS {fmt.size(last.rss)}", style="dim")
            used = max(last.reserved or 0, last.peak or 0)
            if last.total and used / last.total >= NEAR_FULL:
                line.append(
                    f"\nnear the device's memory: {used / last.total:.0%} of "
                    f"{fmt.size(last.total)} reserved",
                    style="bold red",
                )
            label = "allocated "
            series = [float(r.allocated or 0) for r in readings]
            top = max(peak, *(r.reserved or 0 for r in readings))
        else:
            line.append("no GPU ", style="bold")
            top = max(r.rss or 0 for r in readings)
            line.append(f"({last.device or 'cpu'}) · process RSS {fmt.size(last.rss)}")
            line.append(f" · peak {fmt.size(top)}")
            label = "RSS "
            series = [float(r.rss or 0) for r in readings]
        line.append("\n" + label, style="dim")
        width = max(self.content_size.width - len(label) - 12, 4)
        line.append(sparkline(series, width, float(top)), style="green")
        line.append(f" 0–{fmt.size(top)}", style="dim")
        self.update(line)
