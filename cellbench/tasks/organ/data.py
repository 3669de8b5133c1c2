"""The organ task's data: stored CLS features of a fold with their tissue or family labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from cellbench.config import Config
from cellbench.data.families import TISSUES, folds_for_split, resolve_families
from cellbench.errors import BadInputError, UsageError


@dataclass
class OrganData:
    train: Dataset
    val: Dataset
    test: Dataset | None
    classes: list[str]
    warnings: list[str]
    class_counts: dict[str, dict[str, int]]
    dim: int = 0
    tissues: dict[str, list[str]] = field(default_factory=dict)  # split -> tissue per sample
    folds: dict[str, int] = field(default_factory=dict)  # split -> fold number

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def target_classes(config: Config) -> tuple[list[str], dict[str, str]]:
    """The class names, and the class of each tissue that has one."""
    if config.organ.target == "tissue":
        return list(TISSUES), {t: t for t in TISSUES}
    families = resolve_families(config.data.families)
    return list(families), {t: f for f, tissues in families.items() for t in tissues}


def fold_samples(store, k: int, classes: list[str], class_of: dict[str, str]):
    """(dataset of (CLS, label), class counts, tissue per sample, warnings) of fold ``k``."""
    fold = store.fold(k)
    unknown = sorted({t for t in fold.tissues if t not in TISSUES})
    if unknown:
        raise BadInputError(f"{fold.path / 'tissues.json'}: unknown tissues {unknown[:3]}")
    keep = [i for i, t in enumerate(fold.tissues) if t in class_of]
    warnings = []
    if len(keep) < len(fold.tissues):
        warnings.append(
            f"{len(fold.tissues) - len(keep)} tiles of tissues in no family left out "
            "(data.families)"
        )
    cls = np.asarray(fold.cls, dtype=np.float32)[keep]
    labels = np.array([classes.index(class_of[fold.tissues[i]]) for i in keep], dtype=np.int64)
    dataset = TensorDataset(torch.from_numpy(cls), torch.from_numpy(labels))
    counts = {c: int((labels == j).sum()) for j, c in enumerate(classes)}
    return dataset, counts, [fold.tissues[i] for i in keep], warnings


def build_organ_data(config: Config) -> OrganData:
    from cellbench.features.store import open_feature_store

    if not config.data.features:
        raise UsageError("--task organ needs --features STORE/features/TAG (features extract)")
    split = folds_for_split(config.data.split)
    wanted = {"train": split.train[0], "val": split.val[0]}
    store = open_feature_store(
        config.data.features, folds=sorted(set(wanted.values())), force=config.data.features_force
    )
    classes, class_of = target_classes(config)
    warnings = [f"features used with --force: {w}" for w in store.warnings]
    datasets, counts, tissues = {}, {}, {}
    for name, k in wanted.items():
        datasets[name], counts[name], tissues[name], dropped = fold_samples(
            store, k, classes, class_of
        )
        warnings += [f"{name} fold {k}: {w}" for w in dropped]
    return OrganData(
        train=datasets["train"],
        val=datasets["val"],
        test=None,
        classes=classes,
        warnings=warnings,
        class_counts=counts,
        dim=store.dim,
        tissues=tissues,
        folds=wanted,
    )
