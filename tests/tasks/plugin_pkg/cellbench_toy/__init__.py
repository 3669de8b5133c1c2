"""A complete small cellbench task from outside cellbench: is an image dark or bright?

It is found through its package's entry point (``cellbench_toy-0.1.dist-info/entry_points.txt``:
``[cellbench.tasks] brightness = cellbench_toy:BrightnessTask``) and then works with
``cellbench train --task brightness``, ``eval``, ``predict``, ``runs`` and ``sweep`` with no
change to cellbench. docs/tasks.md walks through it.

The data are generated in memory (``data.max_samples`` images per split of
``data.image_size`` pixels, seeded by ``train.seed``): flat grey images around 60 (dark) or 170
(bright) with noise. The model is a global average pool and one linear layer.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cellbench.atomic import atomic_write_json
from cellbench.config import Config, config_from_dict
from cellbench.engine.checkpoint import checkpoint_file, read_checkpoint
from cellbench.engine.device import resolve_device
from cellbench.errors import UsageError
from cellbench.runs.events import EventWriter
from cellbench.runs.lock import lock_if_free
from cellbench.tasks.base import (
    EvalRequest,
    LossSums,
    MetricAccumulator,
    Prediction,
    Predictor,
    Progress,
    Task,
)

CLASSES = ["dark", "bright"]
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class BrightnessData:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset | None
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    warnings: list[str] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def generate(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised images (N, 3, size, size) and their labels (0 dark, 1 bright)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    level = np.where(labels == 1, 170.0, 60.0)[:, None, None, None]
    pixels = np.clip(level + rng.normal(0, 25, (n, 3, size, size)), 0, 255)
    return torch.from_numpy(normalize(pixels)), torch.from_numpy(labels.astype(np.int64))


def normalize(pixels: np.ndarray) -> np.ndarray:
    """0..255 -> about -1..1 (centred: a linear layer separates the two levels in a few steps)."""
    return ((pixels / 255.0 - 0.45) / 0.25).astype(np.float32)


def to_tensor(image: Any, size: int) -> torch.Tensor:
    """A path, PIL image or uint8 array as a normalised (3, size, size) tensor."""
    from cellbench.data.image_input import to_pil

    pil = to_pil(image).resize((size, size))
    return torch.from_numpy(normalize(np.asarray(pil, dtype=np.float32).transpose(2, 0, 1)))


class AccuracyAccumulator(MetricAccumulator):
    def __init__(self, device: torch.device):
        self.losses = LossSums(device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0

    def update(self, outputs, targets, losses) -> None:
        self.correct += (outputs.argmax(dim=1) == targets).sum()
        self.seen += targets.shape[0]
        self.losses.add(losses, targets.shape[0])

    def compute(self) -> dict[str, float]:
        accuracy = int(self.correct) / self.seen if self.seen else math.nan
        return {**self.losses.compute(), "accuracy": accuracy}


@dataclass
class BrightnessPrediction(Prediction):
    label: str
    probability: float

    def to_dict(self, top: int = 1) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability}

    def summary(self, top: int = 1) -> dict[str, str]:
        return {"class": self.label, "probability": f"{self.probability:.4f}"}


@dataclass
class BrightnessPredictor(Predictor):
    model: nn.Module
    config: Config
    device: torch.device
    checkpoint_path: Path
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    epoch: int | None = None
    run: Any = None

    @torch.inference_mode()
    def predict(self, image: Any) -> BrightnessPrediction:
        x = to_tensor(image, self.config.data.image_size)[None].to(self.device)
        probs = torch.softmax(self.model(x).float(), dim=1)[0].cpu()
        index = int(probs.argmax())
        return BrightnessPrediction(self.classes[index], float(probs[index]))


def build_model() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, len(CLASSES)))


class BrightnessTask(Task):
    """Registered by the entry point (its name, ``brightness``, comes from there)."""

    metric_names = ("accuracy",)

    def run_name(self, config: Config) -> str:
        return "brightness"

    def build_data(self, config: Config) -> BrightnessData:
        n, size = config.data.max_samples or 64, config.data.image_size
        splits = {
            name: TensorDataset(*generate(n, size, config.train.seed * 10 + seed))
            for name, seed in SPLIT_SEEDS.items()
        }
        counts = {
            name: {c: int((ds.tensors[1] == i).sum()) for i, c in enumerate(CLASSES)}
            for name, ds in splits.items()
        }
        return BrightnessData(splits["train"], splits["val"], splits["test"], class_counts=counts)

    def build_model(self, config: Config, data: BrightnessData) -> nn.Module:
        return build_model()

    def train_criterion(self, config: Config, data: BrightnessData) -> nn.Module:
        return nn.CrossEntropyLoss()

    eval_criterion = train_criterion

    def metrics(self, data, device: torch.device, epoch: int | None = None):
        return AccuracyAccumulator(device)

    def expected_initial_loss(self, data) -> float | None:
        return math.log(len(CLASSES))

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        return 0  # no backbone

    def _load(self, checkpoint, device, state=None) -> tuple[nn.Module, Config, dict]:
        state = state if state is not None else read_checkpoint(checkpoint)
        config = config_from_dict(state["config"], source=f"{checkpoint} (saved config)")
        model = build_model()
        model.load_state_dict(state["model"])
        return model.to(resolve_device(device)).eval(), config, state

    def load_predictor(self, checkpoint, device="cpu", *, run=None, use_ema=None, state=None):
        model, config, state = self._load(checkpoint, device, state)
        return BrightnessPredictor(
            model=model,
            config=config,
            device=next(model.parameters()).device,
            checkpoint_path=Path(checkpoint),
            epoch=state.get("epoch"),
            run=run,
        )

    @torch.inference_mode()
    def evaluate(self, run, request: EvalRequest, progress: Progress | None = None):
        if request.split not in ("val", "test"):
            raise UsageError(f"--split {request.split}: expected val or test")
        path = checkpoint_file(run, request.checkpoint)
        model, config, state = self._load(path, request.device or "cpu")
        images, labels = getattr(self.build_data(config), request.split).tensors
        device = next(model.parameters()).device
        predicted = model(images.to(device)).argmax(dim=1).cpu()
        if progress is not None:
            progress(f"eval {request.split}", len(labels), len(labels))
        result = {
            "run": run.root.name,
            "split": request.split,
            "checkpoint": request.checkpoint,
            "epoch": state.get("epoch"),
            "metrics": {"accuracy": float((predicted == labels).float().mean())},
            "num_samples": len(labels),
            "warnings": [],
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        out = run.eval_dir / f"{request.split}-{request.checkpoint}.json"
        # lock None: a live training holds the run; write the file, leave its events alone
        with lock_if_free(run.lock) as lock:
            result["event_written"] = lock is not None
            result["files"] = {"json": str(out)}
            atomic_write_json(out, result)
            if lock is not None:
                with EventWriter(run.events) as events:
                    events.emit(
                        "eval",
                        split=request.split,
                        checkpoint=request.checkpoint,
                        metrics=result["metrics"],
                    )
        return result
