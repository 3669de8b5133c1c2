"""The organ head's closing report on its validation fold, from ``best.pt``.

Files in ``runs/<run>/eval/`` (through ``evaluate.write_eval_files``, atomic, JSON last):
``val-best.json`` (metrics, per-class and per-tissue tables, calibration),
``per_class_val-best.csv``, ``per_tissue_val-best.csv``, ``confusion_val-best.png``,
``predictions_val-best.csv``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench import __version__
from cellbench.atomic import atomic_write_text
from cellbench.config import Config
from cellbench.engine.checkpoint import load_checkpoint
from cellbench.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)
from cellbench.metrics.classification import classification_report


def per_tissue_rows(
    tissues: list[str], labels: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> list[dict[str, Any]]:
    """Per tissue: tiles, correct predictions of its target class, accuracy."""
    rows = []
    for tissue in sorted(set(tissues)):
        idx = np.array([i for i, t in enumerate(tissues) if t == tissue])
        correct = int((predicted[idx] == labels[idx]).sum())
        rows.append(
            {
                "tissue": tissue,
                "target": classes[int(labels[idx[0]])],
                "tiles": len(idx),
                "correct": correct,
                "accuracy": correct / len(idx),
            }
        )
    return rows


@torch.inference_mode()
def _val_logits(config: Config, data, run_dir: Path, device) -> tuple[np.ndarray, np.ndarray]:
    from cellbench.tasks.organ.head import OrganHead

    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    # the training's architecture; the standardisation buffers come with the state dict
    model = OrganHead(data.dim, data.num_classes, config.organ.hidden, config.organ.dropout)
    use_ema = config.train.eval_ema and state.get("ema") is not None
    model.load_state_dict(state["ema"] if use_ema else state["model"])
    model.to(device).eval()
    features, labels = data.val.tensors
    logits = torch.cat(
        [
            model(features[i : i + 4096].to(device)).float().cpu()
            for i in range(0, len(features), 4096)
        ]
    )
    return logits.numpy().astype(np.float64), labels.numpy()


def organ_report(config: Config, data, run_dir: Path, device) -> dict[str, Any]:
    from cellbench.tasks.classify.evaluation import _csv_text, write_eval_files

    logits, labels = _val_logits(config, data, run_dir, device)
    temperature = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, temperature)
    calibration = {
        "temperature": temperature,
        "fitted_on": f"val fold {data.folds['val']}",
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
    }
    report = classification_report(labels, after, data.classes, top_k=())
    tissues = per_tissue_rows(data.tissues["val"], labels, after.argmax(axis=1), data.classes)
    metrics = report.metrics()
    result: dict[str, Any] = {
        "run": run_dir.name,
        "split": "val",
        "checkpoint": "best",
        "task": "organ",
        "target": config.organ.target,
        "folds": data.folds,
        "num_samples": report.num_samples,
        "metrics": metrics,
        "calibration": calibration,
        "per_class": report.per_class(),
        "per_tissue": tissues,
        "confusion_matrix": report.confusion.tolist(),
        "classes": list(data.classes),
        "warnings": [],
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    out = run_dir / "eval"
    atomic_write_text(
        out / "per_tissue_val-best.csv",
        _csv_text(
            ["tissue", "target", "tiles", "correct", "accuracy"],
            [
                [r["tissue"], r["target"], r["tiles"], r["correct"], f"{r['accuracy']:.6f}"]
                for r in tissues
            ],
        ),
    )
    files = write_eval_files(out, "val-best", result, report, after, labels, data.tissues["val"])
    files["per_tissue"] = str(out / "per_tissue_val-best.csv")
    return {
        "calibration": calibration,
        "organ_report": {
            "split": "val",
            "checkpoint": "best",
            **{k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
            "per_tissue": tissues,
            "files": files,
        },
    }
