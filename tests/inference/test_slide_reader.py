"""Slide readers: OpenSlide and tifffile read the same pixels and resolution from a pyramidal
tiled TIFF written by tifffile; a file without resolution says so; plain images stay images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cellbench.errors import BadInputError
from cellbench.inference.slide_reader import is_slide, open_slide
from tests.helpers_slides import write_pyramid


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("slides") / "rand.tif"
    return write_pyramid(path, image, mpp=0.5), image


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_both_backends_read_the_levels_pixels_and_resolution(pyramid, backend):
    pytest.importorskip("openslide") if backend == "openslide" else None
    path, image = pyramid
    with open_slide(path, backend) as reader:
        assert reader.backend == backend
        assert reader.mpp == pytest.approx(0.5)
        assert [lv[:2] for lv in reader.levels] == [(150, 100), (75, 50), (37, 25)]
        assert reader.levels[1][2] == pytest.approx(2.0)
        np.testing.assert_array_equal(reader.read(0, 17, 33, 60, 40), image[33:73, 17:77])
        # outside the slide reads as white glass
        edge = reader.read(0, 140, 90, 20, 20)
        np.testing.assert_array_equal(edge[:10, :10], image[90:, 140:])
        assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()


def test_backends_agree_on_a_coarse_level(pyramid):
    pytest.importorskip("openslide")
    path, _ = pyramid
    with open_slide(path, "openslide") as a, open_slide(path, "tifffile") as b:
        # OpenSlide places a level read through level-0 coordinates; at a downsample that is not
        # a whole number (150/37) it interpolates by a fraction of a pixel
        diff = a.read(2, 3, 4, 30, 20).astype(int) - b.read(2, 3, 4, 30, 20)
        assert np.abs(diff).mean() < 1.0


def test_a_slide_without_resolution_tags_has_no_mpp(tmp_path):
    path = write_pyramid(tmp_path / "bare.tif", np.zeros((64, 64, 3), np.uint8), mpp=None)
    for backend in ("auto", "tifffile"):
        with open_slide(path, backend) as reader:
            assert reader.mpp is None


def test_plain_images_are_not_slides_and_read_whole_with_their_dpi(tmp_path):
    png = tmp_path / "tile.png"
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(png, dpi=(101600, 101600))
    small_tif = tmp_path / "tile.tif"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(small_tif)
    assert not is_slide(png) and not is_slide(small_tif)
    assert is_slide(write_pyramid(tmp_path / "p.tif", np.zeros((64, 64, 3), np.uint8), 0.25))
    with open_slide(png) as reader:
        assert reader.backend == "pillow" and reader.levels == [(30, 20, 1.0)]
        assert reader.mpp == pytest.approx(0.25, rel=1e-3)  # 101600 dpi = 0.25 µm/px
        assert (reader.read(0, 25, 15, 10, 10)[:5, :5] == 7).all()


def test_an_unreadable_slide_is_bad_input_naming_it(tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    with pytest.raises(BadInputError, match="broken.svs"):
        open_slide(broken)
    with pytest.raises(BadInputError, match="not found"):
        open_slide(tmp_path / "missing.tif")
