"""Live NVML readings of every visible GPU (nvidia-ml-py), and the GPU screen showing them.

Without a driver (a laptop, a CPU node) ``read_gpus`` says so in one quiet line; the TUI never
needs a GPU. A device whose used memory passes ``NEAR_FULL`` of its total is flagged: a run on it
is about to hit an out-of-memory error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from cellbench.tui import format as fmt

NEAR_FULL = 0.92  # the engine's checks.gpu_memory_fraction default


@dataclass
class GpuReading:
    index: int
    name: str
    utilisation: int | None  # percent
    used: int
    total: int
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    mig: list[str] = field(default_factory=list)  # "MIG 1g.10gb: 3.1 GB / 9.8 GB"

    @property
    def near_full(self) -> bool:
        return self.total > 0 and self.used / self.total >= NEAR_FULL


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_gpus() -> tuple[list[GpuReading], str | None]:
    """``(readings, None)``, or ``([], why)`` when NVML is not there (no driver, no GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError
        return [], f"no GPU: NVML unavailable ({type(exc).__name__.replace('NVMLError_', '')})"
    try:
        readings = [_read_one(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
        return readings, (None if readings else "no GPU: NVML sees no device")
    finally:
        pynvml.nvmlShutdown()


def _read_one(pynvml, index: int) -> GpuReading:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilisation = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except pynvml.NVMLError:  # not supported on MIG-enabled devices
        utilisation = None
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        processes = [(p.pid, p.usedGpuMemory) for p in procs]
    except pynvml.NVMLError:
        processes = []
    return GpuReading(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        utilisation=utilisation,
        used=int(memory.used),
        total=int(memory.total),
        processes=processes,
        mig=_mig_slices(pynvml, handle),
    )


def _mig_slices(pynvml, handle) -> list[str]:
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return []
        count = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except pynvml.NVMLError:
        return []
    slices = []
    for i in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except pynvml.NVMLError:
            continue
        memory = pynvml.nvmlDeviceGetMemoryInfo(mig)
        slices.append(f"MIG {i}: {fmt.size(memory.used)} / {fmt.size(memory.total)}")
    return slices


def gpu_table(readings: list[GpuReading], problem: str | None) -> Table | Text:
    if problem:
        return Text(problem, style="dim")
    table = Table(show_edge=False, pad_edge=False, expand=True)
    for column in ("gpu", "name", "util", "memory", "processes (pid: memory)"):
        table.add_column(column, overflow="fold")
    for r in readings:
        memory = Text(f"{fmt.size(r.used)} / {fmt.size(r.total)}")
        if r.near_full:
            memory.append(" near full", style="bold red")
        procs = ", ".join(f"{pid}: {fmt.size(used)}" for pid, used in r.processes) or "-"
        util = "-" if r.utilisation is None else f"{r.utilisation}%"
        table.add_row(str(r.index), r.name, util, memory, "\n".join([procs, *r.mig]))
    return table


class GpuScreen(Screen):
    """NVML readings, refreshed every 2 s in a worker thread (NVML calls can take a while)."""

    BINDINGS = [Binding("escape,g", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Static("reading NVML...", id="gpus")
        yield Footer(show_command_palette=False)  # ctrl+p still opens it

    def on_mount(self) -> None:
        self.query_one("#gpus", Static).border_title = "GPUs (NVML, every 2 s)"
        self.read()
        self.set_interval(2.0, self.read)

    def read(self) -> None:
        self.run_worker(self._read, thread=True, exclusive=True, group="nvml")

    def _read(self) -> None:
        readings, problem = read_gpus()
        with contextlib.suppress(RuntimeError):  # the app is closing
            self.app.call_from_thread(self.show, readings, problem)

    def show(self, readings: list[GpuReading], problem: str | None) -> None:
        if self.is_attached:
            self.query_one("#gpus", Static).update(gpu_table(readings, problem))
