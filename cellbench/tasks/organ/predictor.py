"""Inference for organ-head runs: image -> backbone CLS -> head -> softmax(logits / T).

An organ run learned on stored features; to predict an image the same backbone (same profile,
same weights: checked against the feature store's sha256) and the same preprocessing
(``backbones.preprocess``) make its CLS, the head gives logits, and the temperature fitted on the
validation fold (``metrics.json`` ``calibration.temperature``; 1.0 when the run has none)
calibrates them. ``cellbench.load_model`` returns an ``OrganPredictor``: a classification
``LoadedModel`` (same ``Prediction``) that also says its temperature.

On a slide (``predict --run NUCLEI --organ-run ORGAN``) the head needs no backbone of its own:
``OrganTileHead`` reads the CLS of the nuclei run's backbone pass, once both runs' feature
stores record the same backbone (``cellbench.inference.tile_head``).
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


def _head(state: dict[str, Any], config) -> nn.Module:
    from cellbench.tasks.organ.head import OrganHead

    weights = state["ema"] if config.train.eval_ema and state.get("ema") else state["model"]
    dim = int(weights["feature_mean"].shape[0])
    head = OrganHead(dim, len(state["classes"]), config.organ.hidden, config.organ.dropout)
    head.load_state_dict(weights)
    return head


def load_organ_model(state: dict[str, Any], path: Path, run_root: Path | None, device):
    """(pipeline, transform, config) of an organ checkpoint, ready for ``predict``."""
    from cellbench.models.backbones import preprocess

    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    head = _head(state, config)
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


@dataclass
class OrganTileHead:
    """The organ head alone, to decide each tile of a slide from the CLS the nuclei run's
    backbone already computed (``predict --organ-run``): no backbone of its own.
    ``backbone_identity`` is what its feature store recorded; the slide pipeline compares it
    with the nuclei run's before any tile is read."""

    head: nn.Module
    classes: list[str]
    temperature: float
    run_name: str
    checkpoint_path: Path
    identity: dict[str, Any]

    def backbone_identity(self) -> dict[str, Any]:
        return self.identity

    @torch.inference_mode()
    def probabilities(self, cls: torch.Tensor) -> np.ndarray:
        """Calibrated probabilities (N, C) float64 of CLS features (N, D): softmax(logits / T),
        as ``OrganPipeline`` gives them for an image."""
        head = self.head.to(cls.device)
        logits = head(cls.float()) / self.temperature
        return logits.softmax(dim=1).double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "checkpoint": str(self.checkpoint_path),
            "temperature": self.temperature,
            "classes": list(self.classes),
        }


def load_organ_tile_head(state: dict[str, Any], path: Path, run_root: Path | None, device):
    """An ``OrganTileHead`` of a checkpoint: the head on ``device`` and its store's backbone
    identity (read from the manifest; a store whose manifest is gone is refused)."""
    from cellbench.engine.device import resolve_device
    from cellbench.errors import BadInputError
    from cellbench.inference.tile_head import config_identity

    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    identity = config_identity(config.to_dict())  # refuses a store whose manifest is gone
    if identity is None:
        raise BadInputError(f"{path}: the organ run names no feature store (data.features)")
    head = _head(state, config).to(resolve_device(device)).eval().requires_grad_(False)
    name = Path(run_root).name if run_root is not None else Path(path).name
    return OrganTileHead(
        head, list(state["classes"]), read_temperature(run_root), name, Path(path), identity
    )
