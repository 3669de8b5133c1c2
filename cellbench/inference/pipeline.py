"""The streaming pipeline: reader threads -> batched forward on the device -> post-processing
worker processes -> the caller (a writer), overlapped, with a bounded number of tiles in flight.

    clock = StageClock(readers=4, workers=3)
    for item, result in stream(items, read, forward, post, batch_size=8, readers=4, workers=3,
                               clock=clock):
        write(item, result)          # in order: item k before item k + 1

It knows nothing of nuclei or slides: ``read(item)`` gives a uint8 array, ``forward(batch)`` a
list of per-item payloads (on the device, in the calling thread), ``post(payload, job(item))`` a
result (a picklable module-level callable, e.g. from ``cellbench.tile_jobs``: it runs in a
``forkserver`` process pool, so the workers share no CUDA context, thread or lock state with the
parent; the fork server imports the callable's modules once and every worker forks from it, so
their imports cost neither time per worker nor memory that is not shared). Results come back
in the items' order, so the output does not depend on scheduling; at most ``prefetch`` tiles
are being read and ``inflight`` payloads post-processed at any time, which bounds memory
whatever the number of items.

``StageClock`` adds up each stage's busy seconds. A stage with ``n`` threads or processes has
``n`` seconds of capacity per second of wall time, so the bottleneck is the stage with the
highest busy time per worker (read, forward, post-processing or write).
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from cellbench.tile_jobs import timed_call as _timed  # it runs in the workers

Item = TypeVar("Item")
STAGES = ("read", "forward", "post", "write")


@dataclass
class StageClock:
    readers: int = 1
    workers: int = 0  # 0: post-processing runs in the calling thread
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    items: int = 0
    wall: float = 0.0

    def per_worker(self) -> dict[str, float]:
        """Busy seconds per thread/process of each stage."""
        lanes = {"read": self.readers, "forward": 1, "post": max(self.workers, 1), "write": 1}
        if self.workers == 0:  # inline post-processing shares the forward's thread
            lanes["post"] = 1
        return {s: self.seconds[s] / lanes[s] for s in STAGES}

    @property
    def bottleneck(self) -> str:
        load = self.per_worker()
        return max(load, key=load.get)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": {s: round(v, 3) for s, v in self.seconds.items()},
            "busy_per_worker": {s: round(v, 3) for s, v in self.per_worker().items()},
            "wall": round(self.wall, 3),
            "items": self.items,
            "items_per_s": round(self.items / self.wall, 3) if self.wall > 0 else None,
            "readers": self.readers,
            "workers": self.workers,
            "bottleneck": self.bottleneck if self.items else None,
        }


def _modules(fn: Any) -> list[str]:
    """The modules a (partial of a) function needs in a worker."""
    found = [getattr(fn, "__module__", None)]
    if isinstance(fn, functools.partial):
        for part in (fn.func, *fn.args, *fn.keywords.values()):
            if callable(part):
                found += _modules(part)
    return [m for m in found if m and m.startswith("cellbench")]


def _context(post: Callable):
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # the fork server imports the workers' modules once; each worker forks from it ready to run
    context.set_forkserver_preload(sorted(set(_modules(post)) | {"cellbench.tile_jobs"}))
    return context


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def stream(
    items: Iterable[Item],
    read: Callable[[Item], np.ndarray],
    forward: Callable[[np.ndarray], Sequence[Any]],
    post: Callable[[Any, Item], Any],
    batch_size: int = 8,
    readers: int = 2,
    workers: int = 0,
    clock: StageClock | None = None,
    job: Callable[[Item], Any] | None = None,
) -> Iterator[tuple[Item, Any]]:
    """Yield ``(item, post(forward(read(item)), job(item)))`` in the order of ``items``;
    ``job`` (default: the item itself) gives what the worker needs to know of the item, as plain
    picklable data."""
    job = job or (lambda item: item)
    clock = clock if clock is not None else StageClock(readers, workers)
    clock.readers, clock.workers = readers, workers
    batch_size = max(1, batch_size)
    prefetch = 2 * batch_size + readers  # tiles being read or waiting for the device
    inflight = batch_size + 2 * max(workers, 1)  # payloads waiting for post-processing
    source = iter(items)
    reads: deque[tuple[Item, Future]] = deque()
    posts: deque[tuple[Item, Future]] = deque()
    read_pool = ThreadPoolExecutor(max(1, readers), thread_name_prefix="cellbench-read")
    post_pool = ProcessPoolExecutor(workers, mp_context=_context(post)) if workers > 0 else None
    exhausted = False
    start = time.perf_counter()

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(reads) < prefetch:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                return
            reads.append((item, read_pool.submit(_timed, read, item)))

    def finish_one() -> Iterator[tuple[Item, Any]]:
        item, future = posts.popleft()
        result, seconds = future.result()
        clock.seconds["post"] += seconds
        clock.items += 1
        handed = time.perf_counter()
        yield item, result
        clock.seconds["write"] += time.perf_counter() - handed  # the caller's time with it

    try:
        fill()
        while reads:
            batch = []
            while reads and len(batch) < batch_size:
                item, future = reads.popleft()
                pixels, seconds = future.result()
                clock.seconds["read"] += seconds
                batch.append((item, pixels))
            fill()  # the readers work on the next batch while the device runs this one
            payloads, seconds = _timed(forward, np.stack([p for _, p in batch]))
            clock.seconds["forward"] += seconds
            for (item, _), payload in zip(batch, payloads, strict=True):
                if post_pool is None:
                    posts.append((item, _done(_timed(post, payload, job(item)))))
                else:
                    posts.append((item, post_pool.submit(_timed, post, payload, job(item))))
            while len(posts) > inflight or (posts and posts[0][1].done()):
                yield from finish_one()
        while posts:
            yield from finish_one()
    finally:
        clock.wall += time.perf_counter() - start
        read_pool.shutdown(wait=True, cancel_futures=True)
        if post_pool is not None:
            post_pool.shutdown(wait=True, cancel_futures=True)
