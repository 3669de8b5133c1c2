"""Evaluate a trained classification run on its val or test split.

``evaluate_run`` rebuilds the model from a checkpoint (the EMA weights when the run validated on
EMA), runs the split through it with the eval transform, and writes into ``runs/<run>/eval/``:

    <split>-<checkpoint>.json              metrics, per-class report, confusion matrix, provenance
    per_class_<split>-<checkpoint>.csv     class, precision, recall, f1, support
    confusion_<split>-<checkpoint>.png     row-normalised confusion matrix
    predictions_<split>-<checkpoint>.csv   index, true, predicted, probability, source (per sample)

All files are written atomically, then one ``eval`` event is appended to ``events.jsonl``.

Evaluating while the run is training is allowed (the checkpoint files are replaced atomically, so
we read a whole one): the ``eval/`` files are written, but the event is not, because
``events.jsonl`` has one writer at a time and that is the training process. The result says so
(``event_written: false``).

The loss is plain cross-entropy (no label smoothing, no mixup), so it can differ from a training
``val_loss`` computed with label smoothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cellbench import __version__
from cellbench.atomic import atomic_write_json, atomic_write_text
from cellbench.config import Config
from cellbench.engine.checkpoint import checkpoint_file, read_checkpoint
from cellbench.engine.device import resolve_device
from cellbench.engine.step import eval_step, to_device
from cellbench.errors import BadInputError, UsageError
from cellbench.metrics.classification import ClassificationReport, classification_report
from cellbench.metrics.plots import confusion_figure, save_figure
from cellbench.runs.events import EventWriter
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_if_free
from cellbench.strict_json import csv_cell
from cellbench.tasks.classify.predictor import build_model_from_checkpoint

SPLITS = ("val", "test")
TOP_K = (5,)


@torch.inference_mode()
def collect_logits(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) as float32 on the CPU and labels (N,) of a loader, model in eval mode.

    ``on_batch(done, total)`` is called after each batch (a progress bar).
    """
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        # the engine's eval step (float32 outputs), shared with validation
        out, _ = eval_step(model, None, to_device(images, device, non_blocking=True), None)
        logits.append(out.cpu())
        labels.append(torch.as_tensor(targets).long().cpu())
        if on_batch is not None:
            on_batch(len(logits), len(loader))
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def expectation_warnings(config: Config, split: str, metrics: dict[str, float]) -> list[str]:
    """Messages for metrics outside the config's ``expect:`` ranges.

    A range keyed by the bare metric (``accuracy``) or by ``<split>_<metric>`` (``test_accuracy``)
    applies; ranges for other splits (``val_*`` when evaluating test) do not.
    """
    messages = []
    for key, bounds in (config.expect or {}).items():
        name = key[len(split) + 1 :] if key.startswith(f"{split}_") else key
        if name not in metrics or len(bounds) != 2:
            continue
        low, high = bounds
        value = metrics[name]
        if not (low <= value <= high):
            messages.append(
                f"{split} {name} = {value:.4g} is outside the expected range [{low:g}, {high:g}] "
                f"(expect.{key})"
            )
    return messages


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[csv_cell(v) for v in row] for row in rows])  # NaN: blank
    return buf.getvalue()


def _sample_sources(dataset: Any) -> list[str] | None:
    # where each sample comes from (a file path, or a Hugging Face dataset row), when it says
    describe = getattr(dataset, "describe", None)
    if describe is None:
        return None
    return [str(describe(i)) for i in range(len(dataset))]


def write_eval_files(
    out_dir: Path,
    stem: str,
    result: dict[str, Any],
    report: ClassificationReport,
    probs: np.ndarray,
    labels: np.ndarray,
    paths: list[str] | None,
) -> dict[str, str]:
    """The per-class CSV, the confusion PNG, the predictions CSV and the JSON (last)."""
    files = {
        "json": out_dir / f"{stem}.json",
        "per_class": out_dir / f"per_class_{stem}.csv",
        "confusion": out_dir / f"confusion_{stem}.png",
        "predictions": out_dir / f"predictions_{stem}.csv",
    }
    result["files"] = {k: str(v) for k, v in files.items()}
    per_class_rows = [
        [r["class"], f"{r['precision']:.6f}", f"{r['recall']:.6f}", f"{r['f1']:.6f}", r["support"]]
        for r in report.per_class()
    ]
    atomic_write_text(
        files["per_class"],
        _csv_text(["class", "precision", "recall", "f1", "support"], per_class_rows),
    )
    title = (
        f"{result['run']} · {result['split']} · {result['checkpoint']} · acc {report.accuracy:.3f}"
    )
    save_figure(confusion_figure(report.confusion, report.class_names, title), files["confusion"])
    predicted = probs.argmax(axis=1) if probs.size else np.zeros(0, dtype=int)
    header = ["index", "true", "predicted", "probability"] + (["source"] if paths else [])
    rows = []
    for i, (t, p) in enumerate(zip(labels.tolist(), predicted.tolist(), strict=True)):
        row = [i, report.class_names[t], report.class_names[p], f"{probs[i, p]:.6f}"]
        rows.append(row + [paths[i]] if paths else row)
    atomic_write_text(files["predictions"], _csv_text(header, rows))
    atomic_write_json(files["json"], result)  # last: its presence means the others are there
    return result["files"]


def _emit(events: EventWriter, result: dict[str, Any]) -> None:
    events.emit(
        "eval", split=result["split"], checkpoint=result["checkpoint"], metrics=result["metrics"]
    )
    for message in result["warnings"]:
        events.emit("warning", check="expect", severity="warning", message=message)


def evaluate_run(
    run: RunPaths,
    split: str = "val",
    checkpoint: str = "best",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on ``split`` with its ``checkpoint``; write ``eval/`` files and an event.

    ``device`` None: the run's ``train.device`` (``auto`` = CUDA when available). The run lock is
    taken briefly to append the event. ``on_batch(done, total)`` reports progress over the
    split's batches.
    Raises BadInputError (exit 3) for a missing checkpoint, a split the run does not have, or
    data whose classes no longer match the checkpoint's.
    """
    from cellbench.data.classify import build_classification_data

    if split not in SPLITS:
        raise UsageError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    path = checkpoint_file(run, checkpoint)
    state = read_checkpoint(path)
    task = state.get("task") or state["config"].get("task")
    if task != "classify":
        raise BadInputError(
            f"{path}: a '{task}' run; 'cellbench eval --run' evaluates classification runs"
        )
    model, config, ema = build_model_from_checkpoint(state, path)
    classes = list(state["classes"])

    data = build_classification_data(config, scan=(split,))  # header scan of this split only
    dataset = data.val if split == "val" else data.test
    if dataset is None:
        raise BadInputError(
            f"{run.root.name}: the run's data ({config.data.path}) has no {split} split"
            + (
                " (data.test_ratio is 0 and there is no test/ folder); use --split val"
                if split == "test"
                else ""
            )
        )
    if list(data.classes) != classes:
        raise BadInputError(
            f"{config.data.path}: classes {list(data.classes)} differ from the checkpoint's "
            f"{classes} (the data changed since training)"
        )
    if len(dataset) == 0:
        raise BadInputError(f"{config.data.path}: the {split} split is empty")

    dev = resolve_device(device if device is not None else config.train.device)
    model.to(dev)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size or config.train.batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
        pin_memory=dev.type == "cuda",
    )
    logits, labels = collect_logits(model, loader, dev, on_batch)
    loss = float(F.cross_entropy(logits, labels, reduction="mean"))
    probs = torch.softmax(logits, dim=1).numpy()
    labels_np = labels.numpy()
    report = classification_report(labels_np, probs, classes, top_k=TOP_K)

    metrics = {"loss": loss, **report.metrics()}
    result: dict[str, Any] = {
        "run": run.root.name,
        "split": split,
        "checkpoint": checkpoint,
        "checkpoint_path": str(path),
        "epoch": state.get("epoch"),
        "ema": ema,
        "device": str(dev),
        "num_samples": report.num_samples,
        "metrics": metrics,
        "per_class": report.per_class(),
        "confusion_matrix": report.confusion.tolist(),
        "classes": classes,
        "warnings": expectation_warnings(config, split, metrics),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    stem = f"{split}-{checkpoint}"
    paths = _sample_sources(dataset)

    # lock None: a live training holds the run; write our files, leave its events alone
    with lock_if_free(run.lock) as lock:
        result["event_written"] = lock is not None
        write_eval_files(run.eval_dir, stem, result, report, probs, labels_np, paths)
        if lock is not None:
            with EventWriter(run.events) as writer:
                _emit(writer, result)
    return result
