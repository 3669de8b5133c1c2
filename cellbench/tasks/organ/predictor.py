"""Inference for organ-head runs: image -> backbone CLS -> head -> softmax(logits / T).

An organ run learned on stored features; to predict an image the same backbone (same profile,
same weights: checked against the feature store's sha256) and the same preprocessing
(``backbones.preprocess``) make its CLS, the head gives logits, and the temperature fitted on the
validation fold (``metrics.json`` ``calibration.temperature``; 1.0 when the run has none)
calibrates them. ``cellbench.load_model`` returns an ``OrganPredictor``: a classification
``LoadedModel`` (same ``Prediction``) that also says its temperature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cellbench.config import config_from_dict
from cellbench.tasks.classify.predictor import LoadedModel


class OrganPipeline(nn.Module):
    """Preprocessed images (B, 3, S, S) -> calibrated logits (B, C)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, temperature: float):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.backbone.forward_features(x)[:, 0]
        return self.head(cls) / self.temperature


@dataclass
class OrganPredictor(LoadedModel):
    """An organ head behind its backbone; predictions are calibrated by ``temperature``."""

    temperature: float = 1.0

    def notes(self) -> list[str]:
        return [f"calibrated with the run's temperature {self.temperature:.3g}"]


def read_temperature(run_root: Path | None) -> float:
    if run_root is None:
        return 1.0
    try:
        metrics = json.loads((Path(run_root) / "metrics.json").read_text())
    except (OSError, ValueError):
        return 1.0
    return float((metrics.get("calibration") or {}).get("temperature") or 1.0)


def load_organ_model(state: dict[str, Any], path: Path, run_root: Path | None, device):
    """(pipeline, transform, config) of an organ checkpoint, ready for ``predict``."""
    from cellbench.models.backbones import preprocess
    from cellbench.tasks.organ.head import OrganHead

    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    weights = state["ema"] if config.train.eval_ema and state.get("ema") else state["model"]
    dim = int(weights["feature_mean"].shape[0])
    head = OrganHead(dim, len(state["classes"]), config.organ.hidden, config.organ.dropout)
    head.load_state_dict(weights)
    from cellbench.features.source_backbone import store_backbone

    backbone = store_backbone(config.data.features, device)
    pipeline = OrganPipeline(backbone.model, head, read_temperature(run_root))
    pipeline.to(backbone.device).eval().requires_grad_(False)

    def transform(image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)[None]
        return preprocess(array, backbone.profile)[0]

    return pipeline, transform, config, backbone.device


def load_organ_predictor(
    state: dict[str, Any], path: Path, run_root: Path, device, run: Any = None
) -> OrganPredictor:
    pipeline, transform, config, dev = load_organ_model(state, path, run_root, device)
    return OrganPredictor(
        model=pipeline,
        transform=transform,
        classes=list(state["classes"]),
        config=config,
        device=dev,
        checkpoint_path=Path(path),
        epoch=state.get("epoch"),
        run=run,
        temperature=pipeline.temperature,
    )
