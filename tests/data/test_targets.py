"""HV targets: the exact-centroid convention, against a naive oracle and as properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cellbench.data.targets import compact_ids, hv_map, hv_map_reference, hv_maps, np_map

instance_maps = arrays(
    np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 6)
)


@settings(max_examples=150, deadline=None)
@given(instance_maps)
def test_every_nucleus_spans_exactly_minus_one_to_one_with_zero_at_its_centroid(inst):
    hv = hv_map(inst)
    assert hv.dtype == np.float32 and hv.shape == (2,) + inst.shape
    assert (hv[:, inst == 0] == 0).all()  # background is 0
    ys, xs = np.mgrid[: inst.shape[0], : inst.shape[1]]
    for i in np.unique(inst[inst > 0]):
        m = inst == i
        area = int(m.sum())
        for axis, coord in ((0, xs), (1, ys)):
            c, v = coord[m], hv[axis][m]
            if c.max() > c.min():
                assert v.min() == -1.0 and v.max() == 1.0
            else:
                assert (v == 0).all()  # one pixel wide on this axis
            # Zero at the exact centroid (stronger than "within half a pixel"): every pixel
            # left of the centroid is negative, right of it positive, on it 0. Compared in
            # integers (coord * area vs sum of coords) so no rounding decides.
            side = np.sign(c * area - c.sum())
            assert (np.sign(v[side != 0]) == side[side != 0]).all()
            assert (np.abs(v[side == 0]) < 1e-6).all()
            # Monotonic along the axis: further from the centroid, larger magnitude.
            order = np.argsort(c, kind="stable")
            assert (np.diff(v[order]) >= -1e-6).all()


@settings(max_examples=60, deadline=None)
@given(instance_maps)
def test_matches_the_naive_per_nucleus_oracle(inst):
    np.testing.assert_allclose(hv_map(inst), hv_map_reference(inst), atol=1e-6)


def test_batch_equals_tile_by_tile_with_gappy_ids():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 5, (4, 16, 16)).astype(np.int32) * 7  # ids 7, 14, 21, 28
    batch[2] = 0  # an empty tile
    expected = np.stack([hv_map(t) for t in batch])
    np.testing.assert_array_equal(hv_maps(batch), expected)
    assert (hv_maps(batch)[2] == 0).all()


def test_single_pixel_and_one_pixel_wide_nuclei_are_zero_on_that_axis():
    inst = np.zeros((8, 8), np.int32)
    inst[1, 1] = 1  # single pixel
    inst[3:7, 4] = 2  # vertical bar, one pixel wide
    hv = hv_map(inst)
    assert hv[:, 1, 1].tolist() == [0.0, 0.0]
    assert (hv[0, 3:7, 4] == 0).all()
    np.testing.assert_allclose(hv[1, 3:7, 4], [-1.0, -1 / 3, 1 / 3, 1.0], rtol=1e-6)


def test_even_width_nucleus_has_its_zero_between_pixels_not_one_pixel_off():
    inst = np.zeros((1, 6), np.int32)
    inst[0, 1:5] = 1  # x = 1..4, centroid 2.5: HoVer-Net's rounding would put 0 on x = 2 or 3
    np.testing.assert_allclose(hv_map(inst)[0, 0, 1:5], [-1, -1 / 3, 1 / 3, 1], rtol=1e-6)


def test_np_map_and_compact_ids():
    inst = np.array([[0, 5, 5], [9, 0, 2]], np.int32)
    assert np_map(inst).tolist() == [[0, 1, 1], [1, 0, 1]]
    assert compact_ids(inst).tolist() == [[0, 2, 2], [3, 0, 1]]
