"""Give back the memory this process holds: garbage collection and the CUDA caching allocator.

``release_memory()`` is what ``train --fresh`` records in its run_start event and what
``cellbench clean --cuda`` shows. It can only free memory of *this* process: memory another
process holds (a stuck notebook, an old training) returns only when that process exits, which is
why the GPU processes are listed through NVML when ``nvidia-ml-py`` is installed.
"""

from __future__ import annotations

import gc
from typing import Any

OTHER_PROCESS_NOTE = (
    "memory held by another process returns only when that process exits; "
    "this command can only release what this process holds"
)
NVML_MISSING = "nvidia-ml-py is not installed (pip install nvidia-ml-py to list GPU processes)"


def _cuda_readings(torch, index: int) -> dict[str, int]:
    return {
        "allocated": int(torch.cuda.memory_allocated(index)),
        "reserved": int(torch.cuda.memory_reserved(index)),
        "peak": int(torch.cuda.max_memory_allocated(index)),
    }


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _process_name(pynvml, pid: int) -> str:
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:  # gone, or another user's process: NVML may still know its name
        try:
            return _decode(pynvml.nvmlSystemGetProcessName(pid))
        except Exception:
            return "?"


def gpu_processes() -> dict[str, Any]:
    """GPUs and the processes using them, as NVML reports them (every process, not just ours)."""
    try:
        import pynvml  # provided by nvidia-ml-py; optional
    except ImportError:
        return {"available": False, "message": NVML_MISSING, "devices": [], "processes": []}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no GPU, or a container without NVML
        return {
            "available": False,
            "message": f"NVML unavailable: {exc}",
            "devices": [],
            "processes": [],
        }
    devices, processes = [], []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _decode(pynvml.nvmlDeviceGetName(handle))
            entry: dict[str, Any] = {"index": index, "name": name}
            try:
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                entry.update(used=int(mem.used), total=int(mem.total))
            except Exception:  # MIG parents and some vGPUs refuse memory queries
                entry.update(used=None, total=None)
            devices.append(entry)
            try:
                running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:
                running = []
            for proc in running:
                used = getattr(proc, "usedGpuMemory", None)
                processes.append(
                    {
                        "pid": int(proc.pid),
                        "name": _process_name(pynvml, int(proc.pid)),
                        "device": index,
                        "used": int(used) if isinstance(used, int) else None,
                    }
                )
    finally:
        pynvml.nvmlShutdown()
    return {"available": True, "message": "", "devices": devices, "processes": processes}


def release_memory() -> dict[str, Any]:
    """Collect garbage, empty the CUDA cache and reset peak statistics, in this process.

    Returns ``gc_collected`` (objects found unreachable), ``cuda_available``,
    ``cuda_emptied`` (the cache was emptied: True whenever CUDA is available, since a process that
    never touched CUDA has nothing cached), ``cuda_initialized``, per-device ``devices`` readings
    before/after (bytes), ``nvml`` (GPU processes, or why they cannot be listed) and ``message``.
    """
    import torch  # here, not at module top: the CLI imports this module lazily but cheaply

    cuda_available = torch.cuda.is_available()
    # Reading memory stats of an uninitialised CUDA would create a context (hundreds of MB) just
    # to report zeros: only a process that already used CUDA has anything to read or release.
    initialized = cuda_available and torch.cuda.is_initialized()
    count = torch.cuda.device_count() if initialized else 0
    before = [_cuda_readings(torch, i) for i in range(count)]

    collected = gc.collect()  # first: tensors only reachable through cycles go back to the cache
    if cuda_available:
        torch.cuda.empty_cache()  # a no-op when this process never initialised CUDA
    for index in range(count):
        torch.cuda.reset_peak_memory_stats(index)
    after = [_cuda_readings(torch, i) for i in range(count)]

    devices = [
        {
            "index": i,
            "name": torch.cuda.get_device_name(i),
            "allocated_before": before[i]["allocated"],
            "reserved_before": before[i]["reserved"],
            "peak_before": before[i]["peak"],
            "allocated_after": after[i]["allocated"],
            "reserved_after": after[i]["reserved"],
        }
        for i in range(count)
    ]
    if not cuda_available:
        message = "no CUDA GPU: garbage collected, nothing to empty"
    elif not initialized:
        message = "CUDA not used by this process yet: its cache was already empty"
    else:
        freed = sum(b["reserved"] - a["reserved"] for b, a in zip(before, after, strict=True))
        message = f"CUDA cache emptied in this process ({freed} bytes returned to the driver)"
    return {
        "gc_collected": int(collected),
        "cuda_available": cuda_available,
        "cuda_initialized": bool(initialized),
        "cuda_emptied": cuda_available,
        "devices": devices,
        "nvml": gpu_processes(),
        "note": OTHER_PROCESS_NOTE,
        "message": message,
    }
