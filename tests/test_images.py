"""cellbench.images: 16-bit grayscale scaled over its full range, float and 32-bit refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cellbench.errors import BadInputError
from cellbench.images import decode_rgb, scale_16bit


def test_16bit_is_scaled_over_the_full_range_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    rgb = np.asarray(decode_rgb(Image.fromarray(values), "x.tif"))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert scale_16bit(np.array([65535, 0])).tolist() == [255, 0]


def test_float_and_wide_integer_images_are_refused_naming_mode_and_depth():
    with pytest.raises(BadInputError, match=r"x\.tif: F image \(32-bit float\)"):
        decode_rgb(Image.fromarray(np.zeros((2, 2), np.float32)), "x.tif")
    wide = Image.fromarray(np.full((2, 2), 70000, np.int32))
    with pytest.raises(BadInputError, match="32-bit"):
        decode_rgb(wide, "y.png")


def test_8bit_modes_convert_as_before():
    gray = Image.fromarray(np.full((2, 2), 100, np.uint8))
    assert np.asarray(decode_rgb(gray, "g")).tolist() == np.asarray(gray.convert("RGB")).tolist()
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert np.asarray(decode_rgb(rgba, "a"))[0, 0].tolist() == [10, 20, 30]
