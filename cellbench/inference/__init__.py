"""Inference from a trained run: ``load_model(run)`` then ``predict(model, image)``.

The model is rebuilt from the run's own checkpoint (config, class names and weights travel inside
it), in eval mode, with the EMA weights when the run evaluated on EMA (``train.eval_ema``), and
images go through the same eval transform as the validation split. Nothing is downloaded.

    >>> import cellbench
    >>> model = cellbench.load_model("2")            # run id, name, folder, or a .pt file
    >>> cellbench.predict(model, "cell.png").label
    'circle'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cellbench.config import Config, config_from_dict
from cellbench.engine.checkpoint import load_checkpoint
from cellbench.engine.device import resolve_device
from cellbench.errors import BadInputError, UsageError, one_line
from cellbench.runs.layout import RunPaths
from cellbench.runs.store import RunStore

if TYPE_CHECKING:
    from cellbench.tasks.nuclei.predictor import NucleiModel

CHECKPOINTS = ("best", "last")
ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass
class LoadedModel:
    """A model ready for inference, with what it needs to read an image and name its output."""

    model: torch.nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    classes: list[str]
    config: Config
    device: torch.device
    checkpoint_path: Path
    epoch: int | None = None  # last completed epoch of the checkpoint
    ema: bool = False  # True when the EMA weights were loaded
    run: RunPaths | None = None

    @property
    def in_chans(self) -> int:
        return int(self.config.data.in_chans)


@dataclass
class Prediction:
    label: str
    index: int
    probability: float
    probabilities: dict[str, float] = field(repr=False)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes, most probable first."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)
        return ranked[:k]


# --------------------------------------------------------------------------- loading


def checkpoint_file(run: RunPaths, checkpoint: str) -> Path:
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"--checkpoint {checkpoint}: expected one of {', '.join(CHECKPOINTS)}")
    path = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
    if not path.is_file():
        raise BadInputError(
            f"{path}: no {checkpoint} checkpoint in run {run.root.name} "
            "(has it trained at least one epoch?)"
        )
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A cellbench checkpoint, loaded with ``weights_only=True`` (no code runs from the file)."""
    state = load_checkpoint(path)
    missing = [k for k in ("config", "classes") if k not in state]
    if missing:
        raise BadInputError(f"{path}: not a cellbench checkpoint (missing {', '.join(missing)})")
    return state


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


def _resolve_run(
    run: str | int | os.PathLike | RunPaths, runs_dir: str | os.PathLike | None
) -> RunPaths | Path:
    """A RunPaths for a run reference or folder, or the Path of a checkpoint file."""
    if isinstance(run, RunPaths):
        return run
    candidate = Path(os.fspath(run)).expanduser() if not isinstance(run, int) else None
    if candidate is not None and candidate.suffix in (".pt", ".pth") and candidate.is_file():
        return candidate
    return RunStore(runs_dir).resolve(run)  # the run resolver every command uses


def load_model(
    run: str | int | os.PathLike | RunPaths,
    runs_dir: str | os.PathLike | None = None,
    checkpoint: str = "best",
    device: str | torch.device | None = "cpu",
    use_ema: bool | None = None,
) -> LoadedModel | NucleiModel:
    """Load a trained run for inference (a ``NucleiModel`` for a nuclei run).

    ``run``: a run id (2), name, folder name, a run folder path, or a checkpoint file (.pt).
    ``checkpoint``: "best" or "last". ``device``: "cpu", "cuda", "auto". ``use_ema``: None follows
    the run's ``train.eval_ema``.
    """
    from cellbench.data.classify.transforms import eval_transform

    target = _resolve_run(run, runs_dir)
    run_paths = target if isinstance(target, RunPaths) else None
    path = checkpoint_file(target, checkpoint) if run_paths is not None else target
    state = read_checkpoint(path)
    task = state.get("task") or state["config"].get("task")
    if task == "nuclei":
        # image -> the features' backbone -> decoder -> frozen post-processing (tasks/nuclei/predictor.py)
        from cellbench.tasks.nuclei.predictor import load_nuclei_model

        root = run_paths.root if run_paths is not None else Path(path).parent.parent
        return load_nuclei_model(state, path, root, device)
    if task == "organ":
        # image -> the features' backbone -> head -> the run's temperature (tasks/organ/predictor.py)
        from cellbench.tasks.organ.predictor import load_organ_model

        root = run_paths.root if run_paths is not None else Path(path).parent.parent
        pipeline, transform, config, dev = load_organ_model(state, path, root, device)
        return LoadedModel(
            model=pipeline,
            transform=transform,
            classes=list(state["classes"]),
            config=config,
            device=dev,
            checkpoint_path=path,
            epoch=state.get("epoch"),
            run=run_paths,
        )
    if task != "classify":
        raise BadInputError(f"{path}: a '{task}' run; load_model/predict serve classification runs")
    model, config, ema = build_model_from_checkpoint(state, path, use_ema=use_ema)
    dev = resolve_device(device)
    model.requires_grad_(False)  # inference only: no autograd bookkeeping
    return LoadedModel(
        model=model.to(dev),
        transform=eval_transform(config.data),
        classes=list(state["classes"]),
        config=config,
        device=dev,
        checkpoint_path=path,
        epoch=state.get("epoch"),
        ema=ema,
        run=run_paths,
    )


# --------------------------------------------------------------------------- images


def _describe(image: ImageInput, index: int | None = None) -> str:
    if isinstance(image, str | os.PathLike):
        return str(image)
    return f"image #{index}" if index is not None else f"{type(image).__name__} image"


def to_pil(image: ImageInput, name: str | None = None) -> Image.Image:
    """A path, a PIL image or a uint8 array (HxW, HxWx1, HxWx3) as a PIL image for the model."""
    name = name or _describe(image)
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as opened:
                opened.load()
                pil = opened.copy()
        except FileNotFoundError as exc:
            raise BadInputError(f"{image}: image not found") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadInputError(f"{image}: cannot read image ({one_line(exc)})") from exc
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise BadInputError(f"{name}: expected a uint8 array (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise BadInputError(f"{name}: expected an HxW or HxWx3 array, got shape {image.shape}")
        pil = Image.fromarray(image)
    else:
        raise BadInputError(f"{name}: expected a path, a PIL image or a numpy array")
    # RGB like the training splits (FileSplit.load); the eval transform itself makes a 1-channel
    # input when data.in_chans is 1, so both paths see the same pixels
    return pil.convert("RGB")


# --------------------------------------------------------------------------- predicting


def _predictions(loaded: LoadedModel, probs: torch.Tensor) -> list[Prediction]:
    probs = probs.float().cpu().numpy()
    out = []
    for row in probs:
        index = int(row.argmax())
        out.append(
            Prediction(
                label=loaded.classes[index],
                index=index,
                probability=float(row[index]),
                probabilities={c: float(p) for c, p in zip(loaded.classes, row, strict=True)},
            )
        )
    return out


@torch.inference_mode()
def predict_tensor(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, C) for an already transformed batch."""
    loaded.model.eval()
    logits = loaded.model(batch.to(loaded.device))
    return torch.softmax(logits.float(), dim=1)


def predict_many(
    loaded: LoadedModel, images: Iterable[ImageInput], batch_size: int = 32
) -> list[Prediction]:
    """Predict a list of images in batches; every image is read before any is predicted."""
    images = list(images)
    tensors = [loaded.transform(to_pil(img, _describe(img, i))) for i, img in enumerate(images)]
    out: list[Prediction] = []
    for start in range(0, len(tensors), max(1, batch_size)):
        batch = torch.stack(tensors[start : start + batch_size])
        out.extend(_predictions(loaded, predict_tensor(loaded, batch)))
    return out


def predict(loaded: LoadedModel, image: ImageInput):
    """The class of one image (path, PIL image or uint8 HxWx3 array) and its probabilities; for a
    nuclei run, its nuclei (``cellbench.tasks.nuclei.predictor.NucleiPrediction``: instances, types,
    probabilities, centroids)."""
    from cellbench.tasks.nuclei.predictor import NucleiModel, predict_nuclei

    if isinstance(loaded, NucleiModel):
        return predict_nuclei(loaded, np.asarray(to_pil(image)))
    return predict_many(loaded, [image])[0]


def read_images(paths: Sequence[str | os.PathLike]) -> list[Image.Image]:
    """Open every file; one BadInputError naming all unreadable ones (none is half-reported)."""
    images, problems = [], []
    for path in paths:
        try:
            images.append(to_pil(path))
        except BadInputError as exc:
            problems.append(str(exc))
    if problems:
        more = (
            f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})"
            if len(problems) > 1
            else ""
        )
        raise BadInputError(problems[0] + more)
    return images
