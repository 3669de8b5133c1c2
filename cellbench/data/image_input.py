"""Images as a caller gives them (a path, a PIL image, a uint8 array) -> one RGB PIL image.

Every predictor reads its input through here, so a bad file is refused the same way by
``cellbench.predict``, ``cellbench predict`` and every task: one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from cellbench.errors import BadInputError, one_line

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def describe_image(image: ImageInput, index: int | None = None) -> str:
    if isinstance(image, str | os.PathLike):
        return str(image)
    return f"image #{index}" if index is not None else f"{type(image).__name__} image"


def to_pil(image: ImageInput, name: str | None = None) -> Image.Image:
    """A path, a PIL image or a uint8 array (HxW, HxWx1, HxWx3) as a PIL image for the model."""
    name = name or describe_image(image)
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as opened:
                opened.load()
                pil = opened.copy()
        except FileNotFoundError as exc:
            raise BadInputError(f"{image}: image not found") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadInputError(f"{image}: cannot read image ({one_line(exc)})") from exc
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise BadInputError(f"{name}: expected a uint8 array (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise BadInputError(f"{name}: expected an HxW or HxWx3 array, got shape {image.shape}")
        pil = Image.fromarray(image)
    else:
        raise BadInputError(f"{name}: expected a path, a PIL image or a numpy array")
    # RGB like the training splits (FileSplit.load); the eval transform itself makes a 1-channel
    # input when data.in_chans is 1, so both paths see the same pixels. 16-bit and float images
    # by cellbench.images' explicit rules, never Pillow's silent clip
    from cellbench.images import decode_rgb

    return decode_rgb(pil, name)


def read_images(paths: Sequence[str | os.PathLike]) -> list[Image.Image]:
    """Open every file; one BadInputError naming all unreadable ones (none is half-reported)."""
    images, problems = [], []
    for path in paths:
        try:
            images.append(to_pil(path))
        except BadInputError as exc:
            problems.append(str(exc))
    if problems:
        more = (
            f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})"
            if len(problems) > 1
            else ""
        )
        raise BadInputError(problems[0] + more)
    return images
