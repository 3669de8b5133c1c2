"""Overlay PNG: outlines in the type's colour, pixels elsewhere untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cellbench.tasks.nuclei.export.colors import TYPE_COLORS
from cellbench.tasks.nuclei.export.overlay import overlay, write_overlay_png


def test_outlines_take_the_type_colour_and_leave_the_rest_of_the_image(tmp_path):
    image = np.full((24, 24, 3), 128, dtype=np.uint8)
    inst = np.zeros((24, 24), dtype=np.int32)
    inst[2:10, 2:10] = 1
    inst[12:20, 12:20] = 2
    types = {1: (1, 0.9), 2: (2, 0.8)}
    path = tmp_path / "overlay.png"
    write_overlay_png(path, image, inst, types)
    out = np.asarray(Image.open(path))
    assert out.shape == (24, 24, 3)
    assert tuple(out[2, 5]) == TYPE_COLORS["Neoplastic"]  # top edge of nucleus 1
    assert tuple(out[19, 15]) == TYPE_COLORS["Inflammatory"]  # bottom edge of nucleus 2
    assert tuple(out[5, 5]) == (128, 128, 128)  # inside: the image
    assert tuple(out[0, 23]) == (128, 128, 128)  # background
    assert (image == 128).all()  # the input is not modified


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9), np.int32))
