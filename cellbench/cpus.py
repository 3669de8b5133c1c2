"""How many CPUs this process may use: its affinity mask on Linux (a container, ``taskset`` or a
scheduler's allotment), else every CPU of the machine. One answer for the worker pools, the
sweep's local pool and the cores the forward leaves to post-processing."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
