"""Split image lists: where each image of a split comes from and how it is opened.

Two kinds share one small interface (``labels``, ``__len__``, ``load``, ``describe``, ``subset``,
``modes``): ``FileSplit`` (paths on disk, read with PIL) and ``HFSplit`` (rows of a Hugging Face
``datasets.Dataset``, decoded by its ``Image`` feature). ``load`` always returns an RGB image; the
mode scan, which reads only headers, tells the caller how many images needed converting.
"""

from __future__ import annotations

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cellbench.errors import BadInputError

_PIL_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    # convert() decodes the file; RGB images come back as an independent copy as well.
    # 16-bit and float images by cellbench.images' rules (scaled or refused), never clipped
    from cellbench.images import decode_rgb

    return decode_rgb(image, name)


def _open_any(value: Any, where: str) -> Image.Image:
    """A PIL image from what an HF image column may hold: PIL, {bytes, path}, a path, an array."""
    try:
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict):
            if value.get("bytes"):
                return Image.open(io.BytesIO(value["bytes"]))
            if value.get("path"):
                return Image.open(value["path"])
        if isinstance(value, str):
            return Image.open(value)
        if isinstance(value, np.ndarray):
            return Image.fromarray(value)
    except _PIL_ERRORS as exc:
        raise BadInputError(f"{where}: unreadable image ({exc})") from exc
    raise BadInputError(f"{where}: not an image (got {type(value).__name__})")


@dataclass
class FileSplit:
    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        return self.paths[i]

    def load(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as image:
                return _to_rgb(image, str(path))
        except _PIL_ERRORS as exc:
            raise BadInputError(f"{path}: unreadable image ({exc})") from exc

    def subset(self, indices: np.ndarray) -> FileSplit:
        return FileSplit([self.paths[i] for i in indices], self.labels[indices])

    def modes(self, workers: int = 8) -> Counter:
        """Count image modes from file headers only (no pixel decoding)."""

        def mode(path: str) -> str:
            try:
                with Image.open(path) as image:
                    return image.mode
            except _PIL_ERRORS as exc:
                raise BadInputError(f"{path}: unreadable image ({exc})") from exc

        # header reads are I/O bound: threads overlap them without extra processes
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return Counter(pool.map(mode, self.paths, chunksize=64))


@dataclass
class HFSplit:
    dataset: Any  # datasets.Dataset
    indices: np.ndarray  # rows of ``dataset`` in this split
    labels: np.ndarray
    image_key: str
    name: str  # e.g. "data/tiny-imagenet[valid]", used in error messages

    def __len__(self) -> int:
        return len(self.indices)

    def describe(self, i: int) -> str:
        return f"{self.name} row {int(self.indices[i])}"

    def load(self, i: int) -> Image.Image:
        value = self.dataset[int(self.indices[i])][self.image_key]
        image = _open_any(value, self.describe(i))
        try:
            return _to_rgb(image, self.describe(i))
        except _PIL_ERRORS as exc:
            raise BadInputError(f"{self.describe(i)}: unreadable image ({exc})") from exc

    def subset(self, indices: np.ndarray) -> HFSplit:
        return HFSplit(
            self.dataset, self.indices[indices], self.labels[indices], self.image_key, self.name
        )

    def modes(self, batch_size: int = 1024) -> Counter:
        """Count image modes from the encoded bytes' headers (no pixel decoding)."""
        import datasets

        dataset = self.dataset
        feature = dataset.features.get(self.image_key)
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(self.image_key, datasets.Image(decode=False))
        dataset = dataset.select(self.indices.tolist())
        counts: Counter = Counter()
        row = 0
        for batch in dataset.iter(batch_size=batch_size):
            for value in batch[self.image_key]:
                where = f"{self.name} row {int(self.indices[row])}"
                image = _open_any(value, where)
                counts[image.mode] += 1
                row += 1
        return counts
