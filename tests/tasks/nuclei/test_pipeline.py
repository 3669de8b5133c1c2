"""Maps -> nuclei -> scores, streamed: same numbers as scoring whole arrays; maps cache."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.data.targets import hv_maps
from cellbench.metrics.nuclei import score_set
from cellbench.tasks.nuclei.pipeline import (
    MapsCache,
    centroids,
    nuclei_of_maps,
    score_nuclei,
)
from cellbench.tasks.nuclei.postproc import PostProcParams, postprocess_tiles, type_map
from tests.metrics.conftest import generated_maps

SMALL = PostProcParams(sobel_size=5, marker_open_size=1, min_object_size=3, min_marker_size=3)


def _maps(inst, types):
    np_prob = (inst > 0).astype(np.float32)
    nt = np.eye(6, dtype=np.float32)[types].transpose(0, 3, 1, 2)
    return np_prob, hv_maps(inst), nt


def test_streamed_scores_equal_whole_set_scores_and_the_sink_sees_every_tile(tmp_path):
    inst, types, tissues = generated_maps(5, 64, seed=11)
    np_prob, hv, nt = _maps(inst, types)
    chunks = [(np_prob[s : s + 2], hv[s : s + 2], nt[s : s + 2]) for s in range(0, 5, 2)]
    seen = []
    scored = score_nuclei(
        nuclei_of_maps(chunks, SMALL),
        inst,
        types,
        tissues,
        sink=lambda k, i, t: seen.append((i, t)),
    )
    whole = postprocess_tiles(np_prob, hv, nt, SMALL)
    pred_inst = np.stack([w[0] for w in whole])
    pred_types = np.stack([type_map(*w) for w in whole])
    assert (
        scored.result.to_dict() == score_set(inst, types, pred_inst, pred_types, tissues).to_dict()
    )
    assert scored.result.bPQ > 0.8 and len(scored.tiles) == 5 and len(seen) == 5
    assert (seen[3][0] == pred_inst[3]).all()


def test_batches_share_one_pool_and_give_the_serial_nuclei():
    from cellbench.metrics.tile_pool import TilePool

    inst, types, _ = generated_maps(6, 32, seed=5)
    np_prob, hv, nt = _maps(inst, types)
    batches = [(np_prob[s : s + 3], hv[s : s + 3], nt[s : s + 3]) for s in (0, 3)]
    serial = list(nuclei_of_maps(batches, SMALL))
    with TilePool(2) as pool:
        pooled = list(nuclei_of_maps(iter(batches), SMALL, chunk=1, pool=pool))
        executor = pool._executor
        assert list(nuclei_of_maps(batches, SMALL, pool=pool))  # a second fold: same processes
        assert pool._executor is executor
    assert len(pooled) == 6
    for (a, ta), (b, tb) in zip(serial, pooled, strict=True):
        assert (a == b).all() and ta == tb


def test_a_tile_count_mismatch_is_an_error():
    inst, types, tissues = generated_maps(3, 32, seed=1)
    np_prob, hv, nt = _maps(inst, types)
    with pytest.raises(ValueError, match="2 predicted tiles for 3"):
        score_nuclei(nuclei_of_maps([(np_prob[:2], hv[:2], nt[:2])], SMALL), inst, types, tissues)


def test_maps_cache_round_trips_in_float16(tmp_path):
    inst, types, _ = generated_maps(3, 32, seed=2)
    np_prob, hv, nt = _maps(inst, types)
    np_prob = np_prob * 0.7 + 0.1
    cache = MapsCache(tmp_path / "maps")
    cache.write([(np_prob[:2], hv[:2], nt[:2]), (np_prob[2:], hv[2:], nt[2:])], 3, 32, 32)
    back = list(cache.chunks(chunk=2))
    assert [len(c[0]) for c in back] == [2, 1]
    assert np.abs(np.concatenate([c[1] for c in back]) - hv).max() < 1e-3
    assert np.abs(np.concatenate([c[0] for c in back]) - np_prob).max() < 1e-3


def test_centroids_are_x_then_y():
    inst = np.zeros((10, 20), dtype=np.int32)
    inst[2:5, 10:14] = 1  # rows 2..4 (y = 3), columns 10..13 (x = 11.5)
    inst[8, 0] = 2
    assert centroids(inst).tolist() == [[11.5, 3.0], [0.0, 8.0]]
    assert centroids(np.zeros((4, 4), np.int32)).shape == (0, 2)
