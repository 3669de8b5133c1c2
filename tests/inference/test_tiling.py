"""Tile geometry: cores partition the region (each object kept by one tile), the level read is
the coarsest one still fine enough, and reads are rescaled to the run's µm/px."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.errors import BadInputError, UsageError
from cellbench.inference.tiling import (
    check_mpp,
    parse_roi,
    plan_geometry,
    read_model_region,
    tile_grid,
)
from tests.helpers_slides import write_pyramid

LEVELS = [(1000, 600, 1.0), (500, 300, 2.0), (250, 150, 4.0)]


@pytest.mark.parametrize(
    ("width", "height", "tile", "margin"), [(200, 130, 64, 8), (64, 64, 64, 16), (65, 300, 32, 4)]
)
def test_cores_partition_the_region_and_keep_the_margin(width, height, tile, margin):
    g = plan_geometry([(width, height, 1.0)], 0.25, 0.25, tile, margin)
    owner = np.zeros((height, width), np.int32)
    for tile_ in tile_grid(g):
        x0, y0, x1, y1 = tile_.core
        assert x0 == margin and y0 == margin and x1 <= tile - margin and y1 <= tile - margin
        owner[tile_.v + y0 : tile_.v + y1, tile_.u + x0 : tile_.u + x1] += 1
    assert (owner == 1).all()


def test_the_level_read_is_the_coarsest_at_least_as_fine_as_the_run():
    assert plan_geometry(LEVELS, 0.125, 0.25, 64, 8).level == 1
    g = plan_geometry(LEVELS, 0.125, 0.3, 64, 8)
    assert g.level == 1 and g.scale == pytest.approx(1.2)
    coarse = plan_geometry(LEVELS, 0.5, 0.25, 64, 8)  # the slide is coarser than the run
    assert coarse.level == 0 and coarse.scale == pytest.approx(0.5)
    assert coarse.size == (2000, 1200)
    assert plan_geometry(LEVELS, 0.125, 0.25, 64, 8, level=2).level == 2
    with pytest.raises(UsageError, match="--level 3"):
        plan_geometry(LEVELS, 0.125, 0.25, 64, 8, level=3)
    with pytest.raises(UsageError, match="--roi"):
        plan_geometry(LEVELS, 0.125, 0.25, 64, 8, roi=(900, 0, 200, 10))


def test_a_region_read_at_another_resolution_is_the_resampled_slide(tmp_path):
    from cellbench.inference.slide_reader import open_slide

    yy, xx = np.mgrid[0:128, 0:160]
    image = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)  # smooth ramps
    path = write_pyramid(tmp_path / "ramp.tif", image, mpp=0.25, levels=2)
    with open_slide(path, "tifffile") as reader:
        same = plan_geometry(reader.levels, 0.25, 0.25, 32, 4, roi=(10, 20, 100, 80))
        np.testing.assert_array_equal(
            read_model_region(reader, same, 0, 0, 50, 40), image[20:60, 10:60]
        )
        half = plan_geometry(reader.levels, 0.25, 0.5, 32, 4)  # read from level 1 as is
        assert half.level == 1 and half.scale == pytest.approx(1.0)
        double = plan_geometry(reader.levels, 0.25, 0.125, 32, 4)  # upsampled 2x
        up = read_model_region(reader, double, 40, 40, 40, 40).astype(int)
        # model pixel (u, v) sits on slide point (u / 2, v / 2): the ramps halve
        assert abs(up[:, :, 0].mean() - (20 + 39 / 2 / 2 - 0.25)) < 1.5
        assert abs(up[:, :, 1].mean() - (20 + 39 / 2 / 2 - 0.25)) < 1.5


def test_resolution_and_roi_are_checked():
    assert check_mpp("s.tif", 0.5, None) == 0.5
    assert check_mpp("s.tif", None, 0.3) == 0.3
    with pytest.raises(BadInputError, match=r"s\.tif: no resolution .* --mpp"):
        check_mpp("s.tif", None, None)
    assert parse_roi("1,2,3,4") == (1, 2, 3, 4)
    with pytest.raises(UsageError, match="x,y,w,h"):
        parse_roi("1,2,3")
