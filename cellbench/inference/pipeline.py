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

The same stages serve ``features extract`` (``cellbench.features.extract``), whose items are
batches and whose results go to the disk rather than to a pool: ``prefetched`` (the reader
threads), ``HostStaging`` (reused host buffers; pinned, and filled asynchronously, from a GPU) and
``BackgroundWriter`` (the writes, in order, on their own thread).

``StageClock`` adds up each stage's busy seconds. A stage with ``n`` threads or processes has
``n`` seconds of capacity per second of wall time, so the bottleneck is the stage with the
highest busy time per worker (read, forward, post-processing or write).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from cellbench.tile_jobs import exit_with
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


def prefetched(
    items: Iterable[Item],
    read: Callable[[Item], Any],
    readers: int = 2,
    depth: int = 4,
    clock: StageClock | None = None,
) -> Iterator[tuple[Item, Any]]:
    """The reader stage: ``(item, read(item))`` in the order of ``items``, read ahead by
    ``readers`` threads with at most ``depth`` reads in flight (memory bounded by ``depth``
    items, whatever their number): when an item is handed out the reads of the next
    ``depth - 1`` have started, so they overlap the caller's work on it."""
    source = iter(items)
    pending: deque[tuple[Item, Future]] = deque()
    pool = ThreadPoolExecutor(max(1, readers), thread_name_prefix="cellbench-read")
    try:
        while True:
            for item in source:
                pending.append((item, pool.submit(_timed, read, item)))
                if len(pending) >= max(1, depth):
                    break
            if not pending:
                return
            item, future = pending.popleft()
            value, seconds = future.result()
            if clock is not None:
                clock.seconds["read"] += seconds
            yield item, value
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class BackgroundWriter:
    """The writer stage: ``put(write, *args)`` runs the writes in order on one thread, so the
    device loop never waits on the disk. At most ``depth`` writes wait at any time (each holds one
    batch's host buffers: memory stays bounded); the first error a write raised is raised in the
    caller at its next ``put`` or at ``drain``/``close``.

        with BackgroundWriter(depth=4) as writer:
            for batch in ...:
                writer.put(write_rows, batch)
        # every write done here (or its error raised)
    """

    def __init__(self, depth: int = 4, clock: StageClock | None = None):
        self.depth = max(1, depth)
        self.clock = clock
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cellbench-write")
        self._pending: deque[Future] = deque()
        self._failed = False

    def put(self, write: Callable[..., Any], *args: Any) -> None:
        while self._pending and (len(self._pending) >= self.depth or self._pending[0].done()):
            self._finish_oldest()
        self._pending.append(self._pool.submit(self._run, write, *args))

    def _run(self, write: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        # after a failed write none of the queued ones runs: a later batch written without the
        # failed one would let a commit count rows that are not on disk
        if self._failed:
            raise RuntimeError("an earlier write failed")
        try:
            return _timed(write, *args)
        except BaseException:
            self._failed = True
            raise

    def _finish_oldest(self) -> None:
        _, seconds = self._pending.popleft().result()
        if self.clock is not None:
            self.clock.seconds["write"] += seconds

    def drain(self) -> None:
        """Wait for every write put so far; the first error among them is raised."""
        while self._pending:
            self._finish_oldest()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
            return
        # an error or Ctrl-C is on its way out: the writes already put still finish (they are
        # whole batches the caller may commit); their own errors do not hide the first one
        with contextlib.suppress(Exception):
            self.close()


class HostSlot:
    """One batch's host buffers, taken from a ``HostStaging`` ring: ``tensors`` (views sized to
    the batch) are filled, by the caller on the CPU or by ``fill`` from the device; the writer
    reads ``arrays()`` (which waits for an asynchronous copy to end) and then ``release()``s the
    slot for a later batch."""

    def __init__(self, tensors: list, buffers: list, ring: queue.Queue):
        self.tensors = tensors
        self._buffers, self._ring, self._event = buffers, ring, None

    def fill(self, sources: Sequence[Any]) -> HostSlot:
        """Copy device tensors into this slot without waiting (CUDA: ``non_blocking`` from the
        device into pinned memory, an event recorded after them)."""
        import torch

        for target, source in zip(self.tensors, sources, strict=True):
            target.copy_(source, non_blocking=True)
        if any(source.device.type == "cuda" for source in sources):
            self._event = torch.cuda.Event()
            self._event.record()
        return self

    def arrays(self) -> list[np.ndarray]:
        if self._event is not None:
            self._event.synchronize()
        return [t.numpy() for t in self.tensors]

    def release(self) -> None:
        if self._ring is not None:
            self._ring.put(self._buffers)
            self._ring = None


class HostStaging:
    """A ring of ``slots`` reusable host buffer sets for the batches between the device and the
    writer (pinned when ``pinned``, for asynchronous copies from a GPU). A batch takes a slot,
    fills it and hands it to the writer, which releases it once written: host memory stays
    bounded by ``slots`` (give the writer's depth + 2), and no batch's outputs are allocated
    anew (fresh pages to fault in, pinned memory to register). ``take`` waits while every slot
    is being written."""

    def __init__(self, slots: int, pinned: bool = False):
        self.pinned = pinned
        self._ring: queue.Queue = queue.Queue()
        for _ in range(max(2, slots)):
            self._ring.put([])  # a slot's buffers, allocated at first use

    def take(self, specs: Sequence[tuple[tuple[int, ...], Any]]) -> HostSlot:
        """A slot whose tensors have the given ``(shape, dtype)``s (views of its buffers)."""
        import torch

        buffers = self._ring.get()
        views = []
        for k, (shape, dtype) in enumerate(specs):
            fits = k < len(buffers) and buffers[k].dtype == dtype
            if not fits or buffers[k].shape[1:] != tuple(shape[1:]) or len(buffers[k]) < shape[0]:
                buffer = torch.empty(tuple(shape), dtype=dtype, pin_memory=self.pinned)
                buffers[k : k + 1] = [buffer]
            views.append(buffers[k][: shape[0]])
        return HostSlot(views, buffers, self._ring)


@contextlib.contextmanager
def cores_beside(workers: int, device: Any) -> Iterator[None]:
    """On a CPU device, torch's intra-op threads for the forward leave one core to each
    post-processing worker while the pipeline runs (restored after): torch takes every core by
    default, and the workers then fight it for them. Measured on 2 cores with 1 worker: the
    forward stage's busy time halved (1.3-1.5 s to 0.77 s for 256 tiles) and tiles/s rose
    10-40 %. On a GPU, or without workers, nothing changes."""
    import torch

    from cellbench.cpus import usable_cpus

    if workers <= 0 or getattr(device, "type", str(device)) != "cpu":
        yield
        return
    cores = usable_cpus()
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, cores - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    posts: deque[tuple[Item, Future]] = deque()
    post_pool = None
    if workers > 0:  # the workers exit with this process, even a SIGKILLed one
        post_pool = ProcessPoolExecutor(
            workers, mp_context=_context(post), initializer=exit_with, initargs=(os.getpid(),)
        )
    start = time.perf_counter()

    def finish_one() -> Iterator[tuple[Item, Any]]:
        item, future = posts.popleft()
        result, seconds = future.result()
        clock.seconds["post"] += seconds
        clock.items += 1
        handed = time.perf_counter()
        yield item, result
        clock.seconds["write"] += time.perf_counter() - handed  # the caller's time with it

    reads = prefetched(items, read, readers, prefetch, clock)
    try:
        while True:
            # taking a batch tops the readers up: they read the next one while the device runs
            batch = [pair for _, pair in zip(range(batch_size), reads, strict=False)]
            if not batch:
                break
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
        reads.close()
        if post_pool is not None:
            post_pool.shutdown(wait=True, cancel_futures=True)
