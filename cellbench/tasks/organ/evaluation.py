"""Evaluate a trained organ head on its val or test fold (``cellbench eval --run organ``).

The head is rebuilt from the checkpoint, the fold's stored CLS features go through it, and the
logits are calibrated with the run's own temperature (fitted on the validation fold when the
training ended, ``metrics.json`` ``calibration.temperature``; 1.0 when the run has none). The
report holds accuracy, balanced accuracy, macro-F1, per class, per tissue, and calibration: ECE
before and after the temperature. Files in ``runs/<run>/eval/`` (atomic, JSON last), as for a
classification run, plus ``per_tissue_<split>-<checkpoint>.csv``; then one ``eval`` event.
On the val fold the temperature was fitted on the same tiles: its ECE is optimistic (said).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench import __version__
from cellbench.atomic import atomic_write_text
from cellbench.config import config_from_dict
from cellbench.data.families import folds_for_split
from cellbench.engine.checkpoint import checkpoint_file, read_checkpoint
from cellbench.engine.device import resolve_device
from cellbench.errors import BadInputError, UsageError
from cellbench.metrics.calibration import expected_calibration_error, nll, softmax
from cellbench.metrics.classification import classification_report
from cellbench.runs.events import EventWriter
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_if_free
from cellbench.tasks.base import EvalRequest, Progress
from cellbench.tasks.classify.evaluation import _csv_text, write_eval_files

SPLITS = ("val", "test")


def per_tissue_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(
        path,
        _csv_text(
            ["tissue", "target", "tiles", "correct", "accuracy"],
            [
                [r["tissue"], r["target"], r["tiles"], r["correct"], f"{r['accuracy']:.6f}"]
                for r in rows
            ],
        ),
    )


@torch.inference_mode()
def _logits(head: torch.nn.Module, features: torch.Tensor, device, progress) -> np.ndarray:
    chunks, step = [], 4096
    for i in range(0, len(features), step):
        chunks.append(head(features[i : i + step].to(device)).float().cpu())
        if progress is not None:
            progress("eval", min(i + step, len(features)), len(features))
    return torch.cat(chunks).numpy().astype(np.float64)


def evaluate_organ_run(
    run: RunPaths, request: EvalRequest, progress: Progress | None = None
) -> dict[str, Any]:
    from cellbench.features.store import open_feature_store
    from cellbench.tasks.organ.data import fold_samples, target_classes
    from cellbench.tasks.organ.head import OrganHead
    from cellbench.tasks.organ.predictor import read_temperature
    from cellbench.tasks.organ.report import per_tissue_rows

    split = request.split
    if split not in SPLITS:
        raise UsageError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    path = checkpoint_file(run, request.checkpoint)
    state = read_checkpoint(path)
    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    if not config.data.features:
        raise BadInputError(f"{path}: the run's config names no feature store (data.features)")
    fold = getattr(folds_for_split(config.data.split), split)[0]
    store = open_feature_store(config.data.features, folds=[fold], force=config.data.features_force)
    classes, class_of = target_classes(config)
    if classes != list(state["classes"]):
        raise BadInputError(
            f"{path}: classes {list(state['classes'])[:3]}... differ from organ.target "
            f"'{config.organ.target}' of its config"
        )
    dataset, _, tissues, warnings = fold_samples(store, fold, classes, class_of)
    features, labels_t = dataset.tensors
    if len(features) == 0:
        raise BadInputError(f"{config.data.features}: fold {fold} has no tile of the run's classes")

    use_ema = bool(config.train.eval_ema) and state.get("ema") is not None
    weights = state["ema"] if use_ema else state["model"]
    head = OrganHead(
        int(weights["feature_mean"].shape[0]), len(classes), config.organ.hidden,
        config.organ.dropout,
    )  # fmt: skip
    head.load_state_dict(weights)
    dev = resolve_device(request.device if request.device is not None else config.train.device)
    head.to(dev).eval()
    logits = _logits(head, features, dev, progress)
    labels = labels_t.numpy()
    temperature = read_temperature(run.root)
    raw, calibrated = softmax(logits), softmax(logits, temperature)
    report = classification_report(labels, calibrated, classes, top_k=())
    rows = per_tissue_rows(tissues, labels, calibrated.argmax(axis=1), classes)
    calibration = {
        "temperature": temperature,
        "ece": expected_calibration_error(calibrated, labels),
        "ece_uncalibrated": expected_calibration_error(raw, labels),
        "nll": nll(logits, labels, temperature),
    }
    if split == "val":
        warnings.append("the temperature was fitted on this val fold: its ECE is optimistic")
    result: dict[str, Any] = {
        "run": run.root.name,
        "split": split,
        "fold": fold,
        "checkpoint": request.checkpoint,
        "checkpoint_path": str(path),
        "epoch": state.get("epoch"),
        "ema": use_ema,
        "device": str(dev),
        "task": "organ",
        "target": config.organ.target,
        "num_samples": report.num_samples,
        "metrics": {**report.metrics(), "ece": calibration["ece"]},
        "calibration": calibration,
        "per_class": report.per_class(),
        "per_tissue": rows,
        "confusion_matrix": report.confusion.tolist(),
        "classes": classes,
        "warnings": warnings,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    stem = f"{split}-{request.checkpoint}"
    # lock None: a live training holds the run; write our files, leave its events alone
    with lock_if_free(run.lock) as lock:
        result["event_written"] = lock is not None
        per_tissue_csv(run.eval_dir / f"per_tissue_{stem}.csv", rows)
        files = write_eval_files(run.eval_dir, stem, result, report, calibrated, labels, tissues)
        files["per_tissue"] = str(run.eval_dir / f"per_tissue_{stem}.csv")
        result["files"] = files
        if lock is not None:
            with EventWriter(run.events) as writer:
                writer.emit(
                    "eval", split=split, checkpoint=request.checkpoint, metrics=result["metrics"]
                )
    return result
