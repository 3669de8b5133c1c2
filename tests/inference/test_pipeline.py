"""The streaming pipeline: results in the items' order whatever the workers, every stage timed,
a bounded number of tiles read ahead."""

from __future__ import annotations

import operator
import threading

import numpy as np
import pytest

from cellbench.inference.pipeline import StageClock, stream


@pytest.mark.parametrize("workers", [0, 2])
def test_results_come_back_in_order_through_every_stage(workers):
    batches = []

    def forward(batch):
        batches.append(len(batch))
        return [int(tile.sum()) for tile in batch]  # 4 * item

    clock = StageClock()
    items = list(range(23))
    out = list(
        stream(
            items,
            lambda i: np.full((2, 2), i),
            forward,
            operator.add,  # payload + job: runs in the worker processes
            batch_size=5,
            readers=3,
            workers=workers,
            clock=clock,
        )
    )
    assert [i for i, _ in out] == items
    assert [r for _, r in out] == [5 * i for i in items]
    assert batches == [5, 5, 5, 5, 3]
    assert clock.items == 23 and clock.wall > 0 and clock.bottleneck in clock.seconds
    assert all(v >= 0 for v in clock.seconds.values()) and clock.seconds["forward"] > 0


def test_reads_stay_a_bounded_distance_ahead_of_the_consumer():
    read_so_far = []
    lock = threading.Lock()

    def read(i):
        with lock:
            read_so_far.append(i)
        return np.zeros((1,), np.uint8)

    ahead = []
    for i, _ in stream(
        range(1000), read, lambda b: [0] * len(b), lambda p, j: p, batch_size=4, readers=2
    ):
        with lock:
            ahead.append(max(read_so_far) - i)
    assert max(ahead) <= 2 * 4 + 2 + 4 + 2  # prefetch + payloads waiting: not the 1000 items
