"""The classification predictor: an image -> its class and the probabilities of every class.

The model is rebuilt from the run's own checkpoint (config, class names and weights travel inside
it), in eval mode, with the EMA weights when the run evaluated on EMA (``train.eval_ema``), and
images go through the same eval transform as the validation split. Nothing is downloaded.
``cellbench.load_model`` returns a ``LoadedModel`` for classification (and organ) runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from cellbench.config import Config, config_from_dict
from cellbench.data.image_input import ImageInput, describe_image, to_pil
from cellbench.errors import BadInputError, one_line
from cellbench.tasks.base import Prediction, Predictor


@dataclass
class ClassPrediction(Prediction):
    """The class of one image (``cellbench.inference.Prediction`` is this class)."""

    label: str
    index: int
    probability: float
    probabilities: dict[str, float] = field(repr=False)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes, most probable first."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)
        return ranked[:k]

    def to_dict(self, top: int = 1) -> dict[str, Any]:
        return {
            "label": self.label,
            "probability": self.probability,
            "top": [{"label": c, "probability": q} for c, q in self.top(top)],
        }

    def summary(self, top: int = 1) -> dict[str, str]:
        row = {"class": self.label, "probability": f"{self.probability:.4f}"}
        if top > 1:
            row[f"top {top}"] = ", ".join(f"{c} {q:.3f}" for c, q in self.top(top))
        return row


@dataclass
class LoadedModel(Predictor):
    """A classifier ready for inference, with what it needs to read an image and name its output."""

    model: torch.nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    classes: list[str]
    config: Config
    device: torch.device
    checkpoint_path: Path
    epoch: int | None = None  # last completed epoch of the checkpoint
    ema: bool = False  # True when the EMA weights were loaded
    run: Any = None  # RunPaths

    @property
    def in_chans(self) -> int:
        return int(self.config.data.in_chans)

    def predict(self, image: ImageInput) -> ClassPrediction:
        return self.predict_many([image])[0]

    def predict_many(
        self, images: Iterable[ImageInput], batch_size: int = 32
    ) -> list[ClassPrediction]:
        """Predict a list of images in batches; every image is read before any is predicted."""
        images = list(images)
        tensors = [
            self.transform(to_pil(img, describe_image(img, i))) for i, img in enumerate(images)
        ]
        out: list[ClassPrediction] = []
        for start in range(0, len(tensors), max(1, batch_size)):
            batch = torch.stack(tensors[start : start + batch_size])
            out.extend(self._predictions(predict_tensor(self, batch)))
        return out

    def _predictions(self, probs: torch.Tensor) -> list[ClassPrediction]:
        out = []
        for row in probs.float().cpu().numpy():
            index = int(row.argmax())
            out.append(
                ClassPrediction(
                    label=self.classes[index],
                    index=index,
                    probability=float(row[index]),
                    probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
                )
            )
        return out


@torch.inference_mode()
def predict_tensor(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, C) for an already transformed batch."""
    loaded.model.eval()
    logits = loaded.model(batch.to(loaded.device))
    return torch.softmax(logits.float(), dim=1)


def build_model_from_checkpoint(
    state: dict[str, Any], source: Path, use_ema: bool | None = None
) -> tuple[torch.nn.Module, Config, bool]:
    """Rebuild the run's model and load its weights; returns (model, config, ema_loaded).

    ``use_ema=None`` picks the weights the run validated on, as the engine does: the EMA weights
    when ``train.eval_ema`` is on and the checkpoint has them, else the model's.
    """
    from cellbench.models import create_model, strip_prefixes  # heavy (timm): when needed

    config = config_from_dict(state["config"], source=f"{source} (saved config)")
    classes = list(state["classes"])
    ema_state = state.get("ema")
    if use_ema is None:
        use_ema = bool(config.train.eval_ema) and ema_state is not None
    if use_ema and ema_state is None:
        raise BadInputError(f"{source}: EMA weights asked for but the checkpoint has none")
    # a state saved from a DDP/EMA wrapper or a torch.compile'd model loads into a plain model
    weights = strip_prefixes(dict(ema_state if use_ema else state["model"]))
    # pretrained=False: the checkpoint holds every weight, so nothing is fetched from a hub
    model_cfg = dataclasses.replace(config.model, pretrained=False, weights=None)
    model = create_model(model_cfg, num_classes=len(classes), in_chans=config.data.in_chans)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise BadInputError(
            f"{source}: weights do not fit model '{model_cfg.name}' ({one_line(exc)})"
        ) from exc
    model.eval()
    return model, config, bool(use_ema)


def load_classifier(
    state: dict[str, Any], path: Path, device, use_ema: bool | None = None, run: Any = None
) -> LoadedModel:
    from cellbench.data.classify.transforms import eval_transform
    from cellbench.engine.device import resolve_device

    model, config, ema = build_model_from_checkpoint(state, path, use_ema=use_ema)
    dev = resolve_device(device)
    model.requires_grad_(False)  # inference only: no autograd bookkeeping
    return LoadedModel(
        model=model.to(dev),
        transform=eval_transform(config.data),
        classes=list(state["classes"]),
        config=config,
        device=dev,
        checkpoint_path=Path(path),
        epoch=state.get("epoch"),
        ema=ema,
        run=run,
    )
