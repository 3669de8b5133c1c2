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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellbench.config import Config
from cellbench.metrics.classification import per_class_scores
from cellbench.tasks import register_task
from cellbench.tasks.base import EvalRequest, MetricAccumulator, Progress, Task, TaskData
from cellbench.tasks.classify.task import ConfusionAccumulator
from cellbench.tasks.organ.data import OrganData, build_organ_data  # noqa: F401


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
    config_section = "organ"

    def model_label(self, config: Config) -> str:
        return "organ_head"  # model.name (simple_cnn by default) plays no part in this task

    def needs_feature_store(self, config: Config) -> bool:
        return True

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
        plain = super().overfit_config(config)
        plain.organ.dropout = 0.0
        return plain

    def finalize(self, config: Config, data: TaskData, run_dir: Path, device) -> dict[str, Any]:
        """Validation report and temperature of ``best.pt`` (see the module docstring)."""
        from cellbench.tasks.organ.report import organ_report

        return organ_report(config, data, Path(run_dir), device)

    def finalize_event(self, extra: dict[str, Any]) -> dict[str, float]:
        report = extra.get("organ_report") or {}
        metrics = {k: v for k, v in report.items() if isinstance(v, int | float)}
        calibration = extra.get("calibration") or {}
        metrics.update({k: v for k, v in calibration.items() if isinstance(v, int | float)})
        return metrics

    def run_name(self, config: Config) -> str:
        # the organ head is not a model.name model: name its runs after the feature store's tag
        if config.data.features:
            name = Path(config.data.features).name.replace("/", "_").replace(":", "_")
            return f"{name}-{self.name}"
        return super().run_name(config)

    def evaluate(self, run, request: EvalRequest, progress: Progress | None = None):
        from cellbench.tasks.organ.evaluation import evaluate_organ_run

        return evaluate_organ_run(run, request, progress)

    def render_eval(self, result, console) -> None:
        from cellbench.tasks.organ.render import render_organ

        render_organ(result, console)

    decides_tiles = True  # its head reads the CLS a nuclei run's backbone already computed

    def load_tile_head(self, checkpoint, device="cpu", *, run=None, state=None):
        from cellbench.engine.checkpoint import read_checkpoint
        from cellbench.tasks.base import run_folder
        from cellbench.tasks.organ.predictor import load_organ_tile_head

        state = state if state is not None else read_checkpoint(checkpoint)
        return load_organ_tile_head(state, Path(checkpoint), run_folder(checkpoint, run), device)

    def load_predictor(self, checkpoint, device="cpu", *, run=None, use_ema=None, state=None):
        from cellbench.engine.checkpoint import read_checkpoint
        from cellbench.tasks.base import run_folder
        from cellbench.tasks.organ.predictor import load_organ_predictor

        state = state if state is not None else read_checkpoint(checkpoint)
        return load_organ_predictor(
            state, Path(checkpoint), run_folder(checkpoint, run), device, run
        )
