"""Decoding an image to the 8-bit RGB a model takes, by explicit rules (docs/outputs.md#inputs).

Pillow's ``convert("RGB")`` clips a 16-bit grayscale image to 255 (a 16-bit TIFF becomes all
white) and truncates float images without a word. The rules:

- 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``,
  ``LAB``, ``HSV``): Pillow's conversion, as before (alpha dropped, palette and CMYK mapped);
- 16-bit integer grayscale (``I;16`` and its byte orders; a 32-bit ``I`` image whose values all
  lie in 0..65535, which is how Pillow may hold a 16-bit PNG): scaled over the type's full
  range, ``v8 = round(v16 * 255 / 65535)``, the same for every image, so tiles of one slide stay
  comparable (no per-image stretch) — a 12-bit image therefore comes out dark, never clipped;
- anything else (32-bit integers beyond 16 bits, ``F`` float images, other modes): refused with
  the file, its mode and bit depth; convert it to 8 or 16 bits first.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cellbench.errors import BadInputError

EIGHT_BIT_MODES = frozenset(
    {"1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
BIT_DEPTH = {"I": 32, "F": 32, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}


def scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to nearest (integer arithmetic: exact, platform-independent)."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def decode_rgb(image: Image.Image, name: str) -> Image.Image:
    """``image`` as 8-bit RGB by the module's rules; BadInputError naming ``name`` otherwise."""
    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return image.convert("RGB")
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise BadInputError(
                f"{name}: {mode} image with values {values.min()}..{values.max()} (32-bit "
                "integers): cellbench reads 8- and 16-bit images; convert it to 16 bits first"
            )
        gray = scale_16bit(values)
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    depth = BIT_DEPTH.get(mode)
    kind = f"{depth}-bit {'float' if mode == 'F' else 'integer'}" if depth else "unsupported"
    raise BadInputError(
        f"{name}: {mode} image ({kind}): cellbench reads 8-bit images and 16-bit grayscale "
        "(scaled 0..65535 -> 0..255); convert it first"
    )
