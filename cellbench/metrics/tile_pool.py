"""Run a function over chunks of tiles, in order, in a process pool of ``workers`` processes.

Used by post-processing and by the nuclei metrics. Memory stays bounded: at most
``2 x workers`` chunks are submitted and not yet collected at any time, whatever the number of
tiles, and results come back in submission order so callers can stream them to disk.

Processes start with ``forkserver`` (``spawn`` where it does not exist): forking a process that
holds torch's or OpenMP's threads can deadlock, and a CUDA context never survives a fork. The
function must be importable (module level); its module is preloaded in the fork server.
A ``TilePool`` keeps its processes for a whole job (one evaluation), ``map_chunks`` without
one makes a pool for the call.
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
    from cellbench.cpus import usable_cpus

    return usable_cpus()


def _context(modules: tuple[str, ...]):
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the worker functions' modules (numpy, scipy, skimage) once; every
    # worker of every later pool forks from it ready to run (seconds saved per pool).
    context.set_forkserver_preload(list(modules))
    return context


def _in_worker(fn: Callable[[T], R], task: T) -> tuple[int, R]:
    """``fn(task)`` and the process that ran it (``TilePool.pids``)."""
    return os.getpid(), fn(task)


class TilePool:
    """One pool of ``workers`` processes for a whole job (an evaluation: its tuning trials, then
    every model batch of the fold), started on first use, so post-processing never waits for
    processes to start again and chunks of consecutive batches keep every worker busy.
    ``workers <= 1`` runs in this process. ``pids`` holds the processes that ran a chunk."""

    def __init__(self, workers: int = 1, preload: tuple[str, ...] = ()):
        self.workers = max(1, int(workers))
        self.preload = preload
        self.pids: set[int] = set()
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self, fn: Callable) -> ProcessPoolExecutor:
        if self._executor is None:
            modules = tuple(dict.fromkeys((*self.preload, fn.__module__)))
            from cellbench.tile_jobs import exit_with  # the workers exit with this process

            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(modules),
                initializer=exit_with,
                initargs=(os.getpid(),),
            )
        return self._executor

    def map(
        self, fn: Callable[[T], R], tasks: Iterable[T], in_flight: int | None = None
    ) -> Iterator[R]:
        """``fn(task)`` for each task, yielded in order; ``tasks`` are consumed lazily,
        ``in_flight`` at a time (default ``2 x workers``), so building a task (slicing a chunk,
        or running the model batch it comes from) overlaps with the workers' chunks."""
        if self.workers <= 1:
            self.pids.add(os.getpid())
            for task in tasks:
                yield fn(task)
            return
        pool = self._pool(fn)
        limit = in_flight or 2 * self.workers
        pending: deque[Future] = deque()

        def collect() -> R:
            pid, result = pending.popleft().result()
            self.pids.add(pid)
            return result

        try:
            for task in tasks:
                pending.append(pool.submit(_in_worker, fn, task))
                if len(pending) >= limit:
                    yield collect()
            while pending:
                yield collect()
        finally:
            # on an error, Ctrl-C or an abandoned generator: drop what has not started
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> TilePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def map_chunks(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    workers: int = 1,
    in_flight: int | None = None,
    pool: TilePool | None = None,
) -> Iterator[R]:
    """``fn(task)`` for each task, yielded in order, on ``pool`` (kept open) or on a pool of
    ``workers`` processes made for this call. ``workers <= 1`` (and no pool) runs in this
    process (no pool, no pickling)."""
    if pool is not None:
        yield from pool.map(fn, tasks, in_flight)
        return
    with TilePool(workers) as own:
        yield from own.map(fn, tasks, in_flight)


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in pieces of ``chunk``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
