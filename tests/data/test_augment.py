"""Augmentations keep HV consistent: transformed HV == HV recomputed from transformed instances."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.data.augment import NucleiAugment, NucleiSample, hflip, rot90, vflip
from cellbench.data.targets import hv_map


def _sample(seed=0, h=24, w=20) -> NucleiSample:
    rng = np.random.default_rng(seed)
    inst = np.zeros((h, w), np.int32)
    for i in range(1, 7):  # rectangles and blobs of various sizes, off-centre
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        inst[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = i
    types = ((inst % 5) + 1).astype(np.uint8) * (inst > 0)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return NucleiSample(image, inst, types, hv_map(inst))


def _assert_consistent(s: NucleiSample):
    np.testing.assert_allclose(s.hv, hv_map(np.ascontiguousarray(s.inst)), atol=1e-5)
    assert ((s.types > 0) == (s.inst > 0)).all()
    assert s.image.shape[:2] == s.inst.shape == s.types.shape == s.hv.shape[1:]


@pytest.mark.parametrize(
    "transform",
    [
        hflip,
        vflip,
        lambda s: rot90(s, 1),
        lambda s: rot90(s, 2),
        lambda s: rot90(s, 3),
        lambda s: rot90(hflip(s), 1),
    ],
)
def test_each_transform_matches_recomputed_hv(transform):
    _assert_consistent(transform(_sample()))


def test_hflip_negates_the_horizontal_channel_only():
    s = _sample(1)
    f = hflip(s)
    np.testing.assert_array_equal(f.hv[0], -s.hv[0][:, ::-1])
    np.testing.assert_array_equal(f.hv[1], s.hv[1][:, ::-1])


def test_random_augment_is_consistent_and_seeded():
    aug = NucleiAugment(hflip=0.5, vflip=0.5, rot90=True, color_jitter=0.2)
    for seed in range(16):
        out = aug(_sample(seed), np.random.default_rng(seed))
        _assert_consistent(out)
        assert out.image.min() >= 0 and out.image.max() <= 255
    a = aug(_sample(3), np.random.default_rng(9))
    b = aug(_sample(3), np.random.default_rng(9))
    np.testing.assert_array_equal(a.image, b.image)
