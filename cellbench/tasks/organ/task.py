"""Organ head: the tissue (19 PanNuke names) or organ family (5) of a tile from its CLS features.

Data come from a feature store (``data.features``, made by ``features extract``) opened with
``open_feature_store``, which refuses a stale or failed store unless ``data.features_force``. The
folds follow the PanNuke protocol of ``data.split`` (train, val, test) = (1,2,3), (2,1,3), (3,2,1);
only the train and validation folds are read. The CLS vectors (N x D, small) are held in memory as
float32 tensors: no image, no backbone, an epoch takes well under a second.

After a completed training, ``finalize`` evaluates ``best.pt`` on the validation fold: accuracy,
balanced accuracy, a per-tissue table, the confusion PNG, and calibration: a temperature fitted on
the validation fold only (``cellbench.metrics.calibration``), with the ECE before and after. The
temperature goes into ``metrics.json`` (``calibration.temperature``), where ``predict`` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from cellbench.config import Config, config_from_dict
from cellbench.data.families import TISSUES, folds_for_split, resolve_families
from cellbench.errors import BadInputError, UsageError
from cellbench.metrics.classification import per_class_scores
from cellbench.tasks import register_task
from cellbench.tasks.base import MetricAccumulator, Task, TaskData
from cellbench.tasks.classify.task import ConfusionAccumulator


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
        fold = store.fold(k)
        unknown = sorted({t for t in fold.tissues if t not in TISSUES})
        if unknown:
            raise BadInputError(f"{fold.path / 'tissues.json'}: unknown tissues {unknown[:3]}")
        keep = [i for i, t in enumerate(fold.tissues) if t in class_of]
        if len(keep) < len(fold.tissues):
            warnings.append(
                f"{name} fold {k}: {len(fold.tissues) - len(keep)} tiles of tissues in no "
                "family left out (data.families)"
            )
        cls = np.asarray(fold.cls, dtype=np.float32)[keep]
        labels = np.array([classes.index(class_of[fold.tissues[i]]) for i in keep], dtype=np.int64)
        datasets[name] = TensorDataset(torch.from_numpy(cls), torch.from_numpy(labels))
        counts[name] = {c: int((labels == j).sum()) for j, c in enumerate(classes)}
        tissues[name] = [fold.tissues[i] for i in keep]
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


class OrganAccumulator(ConfusionAccumulator):
    """Accuracy and macro-F1 as for classification, plus balanced accuracy (mean recall over
    the classes present): PanNuke's tissues are unbalanced (Breast is about a third)."""

    def compute(self) -> dict[str, float]:
        out = super().compute()
        cm = self.confusion.cpu().numpy().reshape(self.num_classes, self.num_classes)
        recall, support = per_class_scores(cm)["recall"], cm.sum(axis=1)
        out["balanced_accuracy"] = float(recall[support > 0].mean()) if support.any() else math.nan
        return out


@register_task("organ")
class OrganTask(Task):
    metric_names = ("accuracy", "balanced_accuracy", "macro_f1")

    def build_data(self, config: Config) -> TaskData:
        return build_organ_data(config)

    def build_model(self, config: Config, data: TaskData) -> nn.Module:
        from cellbench.tasks.organ.head import OrganHead

        organ = config.organ
        model = OrganHead(data.dim, data.num_classes, organ.hidden, organ.dropout)
        if organ.standardize:
            features = data.train.tensors[0]
            model.set_standardization(features.mean(dim=0), features.std(dim=0))
        return model

    def train_criterion(self, config: Config, data: TaskData) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)

    def eval_criterion(self, config: Config, data: TaskData) -> nn.Module:
        return nn.CrossEntropyLoss()

    def metrics(
        self, data: TaskData, device: torch.device, epoch: int | None = None
    ) -> MetricAccumulator:
        return OrganAccumulator(data.num_classes, device)

    def expected_initial_loss(self, data: TaskData) -> float | None:
        return math.log(data.num_classes) if data.num_classes > 1 else None

    def baselines(self, data: TaskData) -> dict[str, float]:
        from cellbench.tasks.classify.task import ClassificationTask

        return ClassificationTask().baselines(data)  # majority class and uniform, on val

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        return 0  # the backbone is frozen by construction: its features are precomputed

    def overfit_config(self, config: Config) -> Config:
        plain = config_from_dict(config.to_dict())
        plain.organ.dropout = 0.0
        t = plain.train
        t.weight_decay = t.label_smoothing = 0.0
        t.ema = t.eval_ema = False
        t.scheduler, t.warmup_epochs = "none", 0
        t.early_stopping.patience = None
        return plain

    def finalize(self, config: Config, data: TaskData, run_dir: Path, device) -> dict[str, Any]:
        """Validation report and temperature of ``best.pt`` (see the module docstring)."""
        from cellbench.tasks.organ.report import organ_report

        return organ_report(config, data, Path(run_dir), device)
