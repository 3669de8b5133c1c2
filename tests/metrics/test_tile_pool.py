"""The chunk pool: results in order, errors raised in the caller, tasks consumed lazily."""

from __future__ import annotations

import pytest

from cellbench.metrics.tile_pool import chunk_bounds, default_workers, map_chunks


def test_results_come_back_in_order_from_two_processes():
    assert list(map_chunks(abs, range(-9, 0), workers=2)) == list(range(9, 0, -1))
    assert list(map_chunks(abs, [-1, -2], workers=1)) == [1, 2]
    assert default_workers() >= 1


def test_a_failing_chunk_raises_in_the_caller():
    with pytest.raises(ValueError, match="invalid literal"):
        list(map_chunks(int, ["1", "x", "3"], workers=2))


def test_tasks_are_built_only_when_a_slot_is_free():
    built = []

    def tasks():
        for i in range(20):
            built.append(i)
            yield -i

    results = map_chunks(abs, tasks(), workers=2, in_flight=3)
    assert next(results) == 0
    assert len(built) <= 4  # a chunk's memory is taken only when it can be worked on
    assert [0, *results] == list(range(20))


def test_chunk_bounds_cover_every_tile():
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(0, 4) == []
    with pytest.raises(ValueError):
        chunk_bounds(3, 0)


def test_one_pool_serves_several_maps_with_the_same_processes():
    import os

    from cellbench.metrics.tile_pool import TilePool

    with TilePool(2) as pool:
        assert list(pool.map(abs, range(-6, 0))) == list(range(6, 0, -1))
        executor = pool._executor
        assert list(map_chunks(abs, [-1, -2, -3], pool=pool)) == [1, 2, 3]
        assert pool._executor is executor  # not a new pool per call
        assert 1 <= len(pool.pids) <= 2 and os.getpid() not in pool.pids
    assert pool._executor is None  # closed with the job
    with TilePool(1) as serial:
        assert list(serial.map(abs, [-4])) == [4] and serial.pids == {os.getpid()}
