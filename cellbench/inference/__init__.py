"""Inference from a trained run: ``load_model(run)`` then ``predict(model, image)``.

``load_model`` reads the run's checkpoint, asks the task registry for the run's task and returns
that task's predictor (``Task.load_predictor``): every predictor follows one protocol
(``cellbench.tasks.base.Predictor``: ``predict(image)``, ``predict_many(images)``, ``classes``,
``config``, ``device``...) and returns a ``cellbench.tasks.base.Prediction`` whose subclass holds
the task's fields. A classification (or organ) run gives a ``LoadedModel`` and a ``Prediction``
(label, index, probability, probabilities); a nuclei run a ``NucleiModel`` and a
``NucleiPrediction`` (instances, types, probabilities, centroids). Nothing is downloaded.

    >>> import cellbench
    >>> model = cellbench.load_model("2")            # run id, name, folder, or a .pt file
    >>> cellbench.predict(model, "cell.png").label
    'circle'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from cellbench.data.image_input import ImageInput, read_images, to_pil
from cellbench.engine.checkpoint import CHECKPOINTS, checkpoint_file, read_checkpoint
from cellbench.errors import BadInputError
from cellbench.runs.layout import RunPaths
from cellbench.runs.store import RunStore
from cellbench.tasks.base import Prediction as BasePrediction
from cellbench.tasks.base import Predictor
from cellbench.tasks.classify.predictor import (
    ClassPrediction,
    LoadedModel,
    build_model_from_checkpoint,
    predict_tensor,
)

# the call forms of before the task registry keep working: ``Prediction`` is a class's prediction
Prediction = ClassPrediction

__all__ = [
    "CHECKPOINTS",
    "BasePrediction",
    "ClassPrediction",
    "ImageInput",
    "LoadedModel",
    "Prediction",
    "Predictor",
    "build_model_from_checkpoint",
    "checkpoint_file",
    "load_model",
    "predict",
    "predict_many",
    "predict_tensor",
    "read_checkpoint",
    "read_images",
    "to_pil",
]


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
) -> Predictor:
    """Load a trained run for inference: its task's predictor (see the module docstring).

    ``run``: a run id (2), name, folder name, a run folder path, or a checkpoint file (.pt).
    ``checkpoint``: "best" or "last". ``device``: "cpu", "cuda", "auto". ``use_ema``: None follows
    the run's ``train.eval_ema``.
    """
    from cellbench.tasks import task_class, task_names

    target = _resolve_run(run, runs_dir)
    run_paths = target if isinstance(target, RunPaths) else None
    path = checkpoint_file(target, checkpoint) if run_paths is not None else target
    state = read_checkpoint(path)
    name = state.get("task") or state["config"].get("task") or "classify"
    if name not in task_names():
        raise BadInputError(
            f"{path}: a '{name}' run; no installed task of that name "
            f"(tasks: {', '.join(task_names())})"
        )
    return task_class(name)().load_predictor(
        path, device, run=run_paths, use_ema=use_ema, state=state
    )


def predict(loaded: Predictor, image: ImageInput) -> BasePrediction:
    """One image (path, PIL image or uint8 HxWx3 array) through a loaded run: a class and its
    probabilities, or for a nuclei run its nuclei (``NucleiPrediction``)."""
    return loaded.predict(image)


def predict_many(
    loaded: Predictor, images: Iterable[ImageInput], batch_size: int = 32
) -> list[BasePrediction]:
    """Predict a list of images in batches; every image is read before any is predicted."""
    return loaded.predict_many(images, batch_size=batch_size)
