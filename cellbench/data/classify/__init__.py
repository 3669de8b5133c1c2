"""Classification data: sources (folders, Hugging Face datasets), splits, transforms, datasets.

The engine calls ``build_classification_data(config)``; ``cellbench data stats`` calls
``class_counts(path)``; tests, benchmarks and quickstart generate data with
``write_shapes_dataset``.
"""

from cellbench.data.classify.dataset import (
    ClassificationData,
    ClassificationDataset,
    build_classification_data,
)
from cellbench.data.classify.shapes import ShapesDataset, write_shapes_dataset
from cellbench.data.classify.sources import ResolvedSource, resolve_source
from cellbench.data.classify.splits import stratified_split, stratified_subset
from cellbench.data.classify.stats import class_counts
from cellbench.data.classify.transforms import eval_transform, train_transform

__all__ = [
    "ClassificationData",
    "ClassificationDataset",
    "ResolvedSource",
    "ShapesDataset",
    "build_classification_data",
    "class_counts",
    "eval_transform",
    "resolve_source",
    "stratified_split",
    "stratified_subset",
    "train_transform",
    "write_shapes_dataset",
]
