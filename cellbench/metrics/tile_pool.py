"""Run a function over chunks of tiles, in order, in a process pool of ``workers`` processes.

Used by post-processing and by the nuclei metrics. Memory stays bounded: at most
``2 x workers`` chunks are submitted and not yet collected at any time, whatever the number of
tiles, and results come back in submission order so callers can stream them to disk.

Processes start with ``forkserver`` (``spawn`` where it does not exist): forking a process that
holds torch's or OpenMP's threads can deadlock, and a CUDA context never survives a fork. The
function must be importable (module level); its module is preloaded in the fork server.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _context(module: str):
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the worker function's module (numpy, scipy, skimage) once; every
    # worker of every later pool forks from it ready to run (seconds saved per pool).
    context.set_forkserver_preload([module])
    return context


def map_chunks(
    fn: Callable[[T], R], tasks: Iterable[T], workers: int = 1, in_flight: int | None = None
) -> Iterator[R]:
    """``fn(task)`` for each task, yielded in order. ``workers <= 1`` runs in this process (no
    pool, no pickling); otherwise ``tasks`` are consumed lazily, ``in_flight`` at a time
    (default ``2 x workers``), so building a task (slicing a chunk) happens just in time."""
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    limit = in_flight or 2 * workers
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(fn.__module__))
    pending: deque[Future] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # on an error, Ctrl-C or an abandoned generator: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in pieces of ``chunk``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
