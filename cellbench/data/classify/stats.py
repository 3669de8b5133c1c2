"""Class distribution of a classification source, without decoding any image.

Folders are counted from their file listings and Hugging Face datasets from their label column;
splits that a training would carve (val from train, test from val) are carved the same way, with
the same seed and ratios, so the numbers are the ones a run will see.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cellbench.config import DataConfig
from cellbench.data.classify.dataset import counts_by_class
from cellbench.data.classify.sources import resolve_source


def class_counts(path: str | Path, data: DataConfig | None = None) -> dict[str, dict[str, int]]:
    """``{split: {class: count}}`` for ``path``; ``data`` supplies ratios, seed and HF keys."""
    config = replace(data or DataConfig(), path=str(path))
    source = resolve_source(config)
    return {
        role: counts_by_class(split.labels, source.classes)
        for role, split in source.splits().items()
    }
