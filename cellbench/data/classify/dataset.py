"""Torch datasets for classification and ``build_classification_data``, the engine's entry point.

``build_classification_data(config)``:
  1. resolves ``data.path`` into splits (``sources.resolve_source``; no pixels read);
  2. caps each split at ``data.max_samples`` with a stratified, seeded subset;
  3. reads every kept image's header once: an unreadable file fails now, naming its path, rather
     than mid-epoch, and non-RGB images (grayscale, RGBA, palette) are counted for one summary
     warning, "N images converted to RGB";
  4. wraps the splits in ``ClassificationDataset`` with train/eval transforms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cellbench.config import Config
from cellbench.data.classify.images import FileSplit, HFSplit
from cellbench.data.classify.sources import ResolvedSource, resolve_source
from cellbench.data.classify.splits import stratified_subset
from cellbench.data.classify.transforms import eval_transform, train_transform


class ClassificationDataset(Dataset):
    """(image tensor, class index) pairs from one split, transformed on access."""

    def __init__(self, split: FileSplit | HFSplit, classes: list[str], transform: Any):
        self.split = split
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels

    def describe(self, index: int) -> str:
        """Where sample ``index`` comes from (a path or a dataset row), for messages."""
        return self.split.describe(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.split.load(index)
        return self.transform(image), int(self.split.labels[index])


@dataclass
class ClassificationData:
    train: ClassificationDataset
    val: ClassificationDataset
    test: ClassificationDataset | None
    classes: list[str]
    source: str  # one line: the source kind and where each split came from
    warnings: list[str] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, ClassificationDataset]:
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out


def counts_by_class(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, counts, strict=True)}


def _cap(source: ResolvedSource, max_samples: int | None, seed: int) -> ResolvedSource:
    if max_samples is None:
        return source
    capped = {
        role: split.subset(stratified_subset(split.labels, max_samples, seed, source.classes))
        for role, split in source.splits().items()
    }
    source.train, source.val = capped["train"], capped["val"]
    source.test = capped.get("test")
    source.description += f"; capped at {max_samples} per split"
    return source


def rgb_conversion_warning(modes: Counter) -> str | None:
    converted = {m: n for m, n in modes.items() if m != "RGB"}
    if not converted:
        return None
    total = sum(converted.values())
    detail = ", ".join(f"{m}: {n}" for m, n in sorted(converted.items()))
    return f"{total} images converted to RGB ({detail})"


def build_classification_data(
    config: Config, scan: Collection[str] | None = None
) -> ClassificationData:
    """Datasets, classes and data warnings for ``task: classify``; see the module docstring.

    ``scan``: the splits whose image headers are read up front (unreadable files fail here,
    non-RGB images are counted); None reads all. Evaluating one split scans only that one.
    """
    data = config.data
    source = _cap(resolve_source(data), data.max_samples, data.split_seed)
    warnings = list(source.warnings)
    modes: Counter = Counter()
    for role, split in source.splits().items():
        if scan is None or role in scan:
            modes.update(split.modes())
    message = rgb_conversion_warning(modes)
    if message and data.in_chans == 3:
        warnings.append(message)
    train_tf, eval_tf = train_transform(data), eval_transform(data)
    return ClassificationData(
        train=ClassificationDataset(source.train, source.classes, train_tf),
        val=ClassificationDataset(source.val, source.classes, eval_tf),
        test=ClassificationDataset(source.test, source.classes, eval_tf)
        if source.test is not None
        else None,
        classes=source.classes,
        source=f"{source.kind}: {source.description}",
        warnings=warnings,
        class_counts={
            role: counts_by_class(split.labels, source.classes)
            for role, split in source.splits().items()
        },
    )
