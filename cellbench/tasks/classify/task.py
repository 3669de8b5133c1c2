"""Image classification: cross-entropy (label smoothing, or soft targets under mixup/cutmix),
accuracy and macro-F1 from a confusion matrix accumulated on the device.

Data comes from ``cellbench.data.classify.build_classification_data`` (ImageFolder trees, one
folder split per class, Hugging Face datasets) and models from ``cellbench.models.create_model``
(timm names and the built-ins). Mixup/cutmix are timm's ``Mixup`` with ``SoftTargetCrossEntropy``
(timm's recipe): they need even batches, so the last uneven batch is dropped when they are on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellbench.config import Config
from cellbench.metrics.classification import per_class_scores
from cellbench.tasks import register_task
from cellbench.tasks.base import (
    BatchTransform,
    EvalRequest,
    LossSums,
    MetricAccumulator,
    Progress,
    Task,
    TaskData,
)


def _mixing(config: Config) -> bool:
    return config.train.mixup > 0 or config.train.cutmix > 0


class ConfusionAccumulator(MetricAccumulator):
    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        self.losses = LossSums(device)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor, losses) -> None:
        predicted = outputs.argmax(dim=1)
        self.confusion += torch.bincount(
            targets * self.num_classes + predicted, minlength=self.num_classes**2
        )
        self.losses.add(losses, targets.shape[0])  # batch means: weighted by the batch size

    def all_reduce(self) -> None:
        from cellbench.engine.distributed import all_reduce_sum

        all_reduce_sum(self.confusion)  # integer counts: exact at any world size
        self.losses.all_reduce()

    def compute(self) -> dict[str, float]:
        cm = self.confusion.cpu().numpy().reshape(self.num_classes, self.num_classes)
        total = int(cm.sum())
        scores = per_class_scores(cm)
        present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
        return {
            **self.losses.compute(),
            "accuracy": float(np.trace(cm) / total) if total else float("nan"),
            "macro_f1": float(scores["f1"][present].mean()) if present.any() else float("nan"),
        }


@register_task("classify")
class ClassificationTask(Task):
    metric_names = ("accuracy", "macro_f1")

    def reads_data_path(self, config: Config) -> bool:
        return True  # image folders, a saved Hugging Face dataset (hf:// names: not a path)

    def build_data(self, config: Config) -> TaskData:
        from cellbench.data.classify import build_classification_data

        return build_classification_data(config)

    def build_model(self, config: Config, data: TaskData) -> nn.Module:
        from cellbench.models import create_model

        # the data decides; a model.num_classes that disagrees is refused by create_model
        return create_model(
            config.model, num_classes=data.num_classes, in_chans=config.data.in_chans
        )

    def train_criterion(self, config: Config, data: TaskData) -> nn.Module:
        if _mixing(config):
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()  # Mixup already smoothed the soft targets
        return nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)

    def eval_criterion(self, config: Config, data: TaskData) -> nn.Module:
        return nn.CrossEntropyLoss()

    def batch_transform(self, config: Config, data: TaskData) -> BatchTransform | None:
        if not _mixing(config):
            return None
        from timm.data import Mixup

        return Mixup(
            mixup_alpha=config.train.mixup,
            cutmix_alpha=config.train.cutmix,
            prob=config.train.mixup_prob,
            label_smoothing=config.train.label_smoothing,
            num_classes=data.num_classes,
        )

    def needs_even_batches(self, config: Config) -> bool:
        return _mixing(config)

    def metrics(
        self, data: TaskData, device: torch.device, epoch: int | None = None
    ) -> MetricAccumulator:
        return ConfusionAccumulator(data.num_classes, device)

    def expected_initial_loss(self, data: TaskData) -> float | None:
        # an untrained head gives near-uniform probabilities: cross-entropy = ln(C)
        return math.log(data.num_classes) if data.num_classes > 1 else None

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Accuracy of always predicting the train majority class, and of uniform guessing.

        Computed on the validation split: the numbers a trained model must beat.
        """
        c = data.num_classes
        out: dict[str, float] = {"random_accuracy": 1.0 / c, "uniform_loss": math.log(c)}
        train_counts = [data.class_counts["train"].get(name, 0) for name in data.classes]
        val_counts = [data.class_counts["val"].get(name, 0) for name in data.classes]
        if sum(val_counts):
            majority = int(np.argmax(train_counts))
            out["majority_class"] = data.classes[majority]
            out["majority_accuracy"] = val_counts[majority] / sum(val_counts)
        return out

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        from cellbench.models import set_backbone_trainable

        return set_backbone_trainable(model, trainable)  # everything but get_classifier()

    def evaluate(self, run, request: EvalRequest, progress: Progress | None = None):
        from cellbench.tasks.classify.evaluation import evaluate_run

        on_batch = None
        if progress is not None:

            def on_batch(done: int, total: int) -> None:
                progress(f"eval {request.split}", done, total)

        return evaluate_run(
            run,
            split=request.split,
            checkpoint=request.checkpoint,
            batch_size=request.batch_size,
            device=request.device,
            on_batch=on_batch,
        )

    def render_eval(self, result, console) -> None:
        from cellbench.tasks.classify.render import render_classification

        render_classification(result, console)

    def load_predictor(self, checkpoint, device="cpu", *, run=None, use_ema=None, state=None):
        from cellbench.engine.checkpoint import read_checkpoint
        from cellbench.tasks.classify.predictor import load_classifier

        state = state if state is not None else read_checkpoint(checkpoint)
        return load_classifier(state, Path(checkpoint), device, use_ema=use_ema, run=run)

    def overfit_config(self, config: Config) -> Config:
        plain = super().overfit_config(config)
        plain.train.layer_decay = None
        plain.train.freeze_backbone_epochs = 0
        return plain
