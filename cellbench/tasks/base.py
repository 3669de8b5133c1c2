"""What a task gives cellbench: to the one training loop its data, model, losses, metrics and
monitored metric; after training its closing report (``finalize``), its evaluation
(``evaluate``) and its predictor (``load_predictor``), so no caller switches on a task's name.

The loop (``cellbench.engine.trainer``) knows nothing of classes, masks or organs: it asks the
task to split a batch into ``(inputs, targets)`` (tensors or mappings of tensors), runs the one
step function (``cellbench.engine.step``), calls the task's criterion (a tensor or named terms
with the total under ``"loss"``), and feeds the task's metric accumulator. A new task subclasses
``Task`` and registers itself with ``@register_task("name")`` (``cellbench.tasks``), or is
named by a package's ``cellbench.tasks`` entry point (docs/tasks.md shows a complete one).

A predictor (``Predictor``) is what ``cellbench.load_model`` returns: ``predict(image)`` gives a
``Prediction`` whose subclass carries the task's fields (a class and its probabilities; nuclei
with their types and centroids) and whose ``to_dict`` is what ``predict --json`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from cellbench.config import Config
from cellbench.errors import UsageError

BatchTransform = Callable[[Any, Any], tuple[Any, Any]]
# stage, done, total: what an evaluation reports as it goes (a progress bar per stage)
Progress = Callable[[str, int, int], None]


def run_folder(checkpoint: str | os.PathLike, run: Any = None) -> Path:
    """The run folder of a checkpoint: ``run``'s root, else two levels above the file
    (``<run>/checkpoints/best.pt``)."""
    return Path(run.root) if run is not None else Path(checkpoint).parent.parent


class Prediction:
    """One image's prediction; each task's subclass (a dataclass) holds its own fields."""

    def to_dict(self, top: int = 1) -> dict[str, Any]:
        """JSON-ready fields (``predict --json``); ``top``: how many ranked classes to list."""
        raise NotImplementedError

    def summary(self, top: int = 1) -> dict[str, str]:
        """Columns of the ``predict`` table for people (column -> text)."""
        return {k: str(v) for k, v in self.to_dict(top).items() if not isinstance(v, dict | list)}


class Predictor:
    """A trained run ready for inference (``cellbench.load_model``): the common protocol of
    every task's predictor. Subclasses are dataclasses with at least these fields."""

    config: Config
    device: torch.device
    classes: list[str]
    checkpoint_path: Path
    epoch: int | None
    run: Any  # the run's RunPaths or folder, None for a bare checkpoint file
    # True when ``save_outputs`` writes files per image (``predict --out``)
    writes_files: bool = False
    predicts_slides: bool = False  # whole-slide images (cellbench.inference.slide)

    def predict(self, image: Any) -> Prediction:
        """One image: a path, a PIL image or a uint8 (H, W, 3) array."""
        raise NotImplementedError

    def predict_many(self, images: Iterable[Any], batch_size: int = 32) -> list[Prediction]:
        """Several images, every one read before any is predicted."""
        from cellbench.data.image_input import describe_image, to_pil

        pil = [to_pil(img, describe_image(img, i)) for i, img in enumerate(images)]
        return [self.predict(img) for img in pil]

    def notes(self) -> list[str]:
        """Lines the user should read before the results (e.g. which post-processing)."""
        return []

    def slide_summary(self, row: dict[str, Any]) -> dict[str, str]:
        """The table row of a finished slide (``predicts_slides`` predictors)."""
        raise NotImplementedError

    def output_names(self, stem: str) -> list[str]:
        """The file names ``save_outputs`` writes for an image named ``stem`` (checked against
        the user's files before anything is written: ``cellbench.outputs``)."""
        return []

    def save_outputs(
        self, prediction: Prediction, image: Any, folder: Path, stem: str
    ) -> dict[str, str]:
        """Write one image's files into ``folder`` (when ``writes_files``); {kind: path}."""
        return {}

    def json_output(self, run_name: str, rows: list[dict[str, Any]]) -> Any:
        """What ``predict --json`` prints for the rows of every image."""
        return rows


@dataclass
class EvalRequest:
    """What ``cellbench eval`` asks of a task's ``evaluate``. The options after ``device`` only
    apply to the tasks that name them in ``Task.eval_options`` (others refuse them)."""

    split: str = "val"
    checkpoint: str = "best"
    batch_size: int | None = None
    device: str | None = None
    tune_postproc: bool = False
    allow_leak: bool = False
    export: Path | None = None
    workers: int = 1
    fold: int | None = None

    def task_options(self) -> list[str]:
        """The task-specific options given (not left at their defaults)."""
        default = EvalRequest()
        skip = {"split", "checkpoint", "batch_size", "device"}
        return [
            f.name
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) != getattr(default, f.name)
        ]


class TaskData(Protocol):
    """What the loop reads of a task's data (``ClassificationData`` is one). A dataclass, so
    ``--overfit-small`` can ``dataclasses.replace`` its splits."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    classes: list[str]
    warnings: list[str]  # shown once at the start of a training
    class_counts: dict[str, dict[str, int]]  # split -> class name -> count

    @property
    def num_classes(self) -> int: ...


class LossSums:
    """Per-sample sums of a split's named loss terms on the device (batch mean x batch size).

    ``compute`` gives ``{"loss": ..., "loss_<term>": ...}``: the total and each other term."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: Mapping[str, torch.Tensor], n: int) -> None:
        for name, value in terms.items():
            total = self.sums.get(name)
            if total is None:
                total = self.sums[name] = torch.zeros((), dtype=torch.float64, device=self.device)
            total += value.detach().double() * n
        self.count += n

    def all_reduce(self) -> None:
        """Sum the per-rank sums and counts over the processes (nothing with one process).

        Every rank has seen the same terms, so the stacked sums line up."""
        from cellbench.engine import distributed

        if not distributed.current().enabled:
            return
        names = list(self.sums)
        device = self.device
        stacked = [self.sums[k] for k in names] + [
            torch.tensor(float(self.count), dtype=torch.float64, device=device)
        ]
        reduced = distributed.all_reduce_sum(torch.stack(stacked))
        for i, name in enumerate(names):
            self.sums[name] = reduced[i]
        self.count = int(reduced[-1].item())

    def compute(self) -> dict[str, float]:
        if not self.sums:
            return {"loss": float("nan")}
        names = list(self.sums)
        values = torch.stack([self.sums[k] for k in names]).tolist()  # one sync
        out = {}
        for name, value in zip(names, values, strict=True):
            key = "loss" if name == "loss" else f"loss_{name}"
            out[key] = value / max(self.count, 1)
        return out


class MetricAccumulator:
    """Accumulates a split's loss terms and metrics on the device; ``compute`` syncs once."""

    def update(self, outputs: Any, targets: Any, losses: Mapping[str, torch.Tensor]) -> None:
        """``losses``: the eval criterion's named terms of this batch (the total under "loss")."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """``{"loss": ..., "loss_<term>": ..., <metric>: ...}`` over everything seen."""
        raise NotImplementedError

    def all_reduce(self) -> None:
        """Under several processes, before ``compute``: make this accumulator hold the whole
        split's raw sums (counts summed over ranks with ``distributed.all_reduce_sum``, per-item
        results gathered with ``distributed.gather_objects``), never an average of per-rank
        metrics. Every rank calls it, in the same order."""
        raise NotImplementedError(
            f"{type(self).__name__}: no all_reduce, so it cannot validate under several processes"
        )


class Task:
    name: str = "base"
    # metric names (history columns are ``val_<name>``); the first is shown first
    metric_names: tuple[str, ...] = ()
    # named loss terms besides the total (columns ``train_loss_<term>``, ``val_loss_<term>``)
    loss_names: tuple[str, ...] = ()
    # the metric ``--overfit-small`` reports on the memorised examples (``accuracy`` field)
    overfit_metric: str = "accuracy"
    # explicit directions ("min"/"max") for metrics whose name the shared rule
    # (``cellbench.runs.direction``) does not decide the way this task means it
    metric_directions: dict[str, str] = {}
    # the Config section holding this task's settings (``config.nuclei``); None: it has none
    config_section: str | None = None
    # the ``eval`` options (``EvalRequest`` fields) this task takes besides split/checkpoint/...
    eval_options: frozenset[str] = frozenset()
    # True when a run trains one model per organ family (``train --family F`` selects it)
    per_family: bool = False

    def settings(self, config: Config) -> Any:
        """This task's section of the config (its defaults when the task declares none)."""
        return getattr(config, self.config_section) if self.config_section else None

    def run_name(self, config: Config) -> str:
        """The name of a new run before ``-2``, ``-3``... (``<model>-<task>`` by default)."""
        model = config.model.name.replace("/", "_").replace(":", "_")
        return f"{model}-{self.name}"

    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """A loader batch as ``(inputs, targets)``: each a tensor or a mapping of tensors.
        Only these are moved to the device; anything else in the batch stays on the host."""
        inputs, targets = batch
        return inputs, targets

    def needs_feature_store(self, config: Config) -> bool:
        """True when this config trains on a feature store (``data.features``): a command given
        none may then offer the workspace's default store (``cellbench.workspace.defaults``)."""
        return False

    def reads_data_path(self, config: Config) -> bool:
        """True when training this config reads ``data.path`` from disk: a sweep then refuses a
        path that is not there before its first trial (``cellbench.sweep.limits``). A task that
        makes its data or trains on a feature store says False (the default)."""
        return False

    def configure(self, config: Config) -> None:
        """Called once with the run's config before anything is built (settings the task's
        other hooks need, e.g. how often an expensive metric runs)."""

    def build_data(self, config: Config) -> TaskData:
        raise NotImplementedError

    def build_model(self, config: Config, data: TaskData) -> nn.Module:
        raise NotImplementedError

    def train_criterion(self, config: Config, data: TaskData) -> nn.Module:
        """The loss the optimizer minimises (may expect soft targets, see ``batch_transform``)."""
        raise NotImplementedError

    def eval_criterion(self, config: Config, data: TaskData) -> nn.Module:
        """The plain loss reported as ``val_loss`` (no smoothing, no mixing)."""
        raise NotImplementedError

    def batch_transform(self, config: Config, data: TaskData) -> BatchTransform | None:
        """A per-batch transform applied on the device before the forward pass (e.g. mixup)."""
        return None

    def needs_even_batches(self, config: Config) -> bool:
        """True when ``batch_transform`` needs every batch the same (even) size: drop the last."""
        return False

    def metrics(
        self, data: TaskData, device: torch.device, epoch: int | None = None
    ) -> MetricAccumulator:
        """A fresh accumulator for one pass over a split; ``epoch`` (1-based) during training,
        None elsewhere (``--overfit-small``, ``eval``)."""
        raise NotImplementedError

    def epoch_findings(self, row: dict[str, Any], config: Config) -> list[Any]:
        """Task-specific sanity checks of an epoch's history row (``checks.Finding`` list);
        each check name fires once per run."""
        return []

    def model_label(self, config: Config) -> str:
        """The model's name in the banner, ``run_start``, ``runs list`` and metrics.json."""
        return config.model.name

    def undefined_metric_reason(self, config: Config) -> str:
        """Why a validation metric can be undefined (NaN) for this task, for the warning."""
        return "no validation sample it can be computed on"

    def expect_ranges(self, config: Config) -> dict[str, list[float]]:
        """The ``expect:`` ranges that apply to this run's final metrics."""
        return dict(config.expect or {})

    def expected_initial_loss(self, data: TaskData) -> float | None:
        """The loss of an untrained model (ln C for C balanced classes), or None."""
        return None

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Scores that need no model (majority class, uniform random)."""
        return {}

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        """Freeze/unfreeze the backbone (``train.freeze_backbone_epochs``); returns the number
        of parameter values changed."""
        raise NotImplementedError

    def overfit_config(self, config: Config) -> Config:
        """The config of ``--overfit-small``: the same data and model, nothing that fights
        memorisation (no augmentation, dropout, weight decay, smoothing, mixing, EMA, schedule
        or early stop). A task adds its own settings on top (``super().overfit_config``)."""
        from cellbench.config import config_from_dict

        plain = config_from_dict(config.to_dict())
        plain.data.augment = False
        plain.model.drop_rate = 0.0
        t = plain.train
        t.weight_decay = t.label_smoothing = 0.0
        t.mixup = t.cutmix = 0.0
        t.ema = t.eval_ema = False
        t.scheduler, t.warmup_epochs = "none", 0
        t.early_stopping.patience = None
        return plain

    def finalize(self, config: Config, data: TaskData, run_dir, device) -> dict | None:
        """After a completed training: a task's closing report (files in ``eval/``); what it
        returns is merged into ``metrics.json``. None: nothing to add."""
        return None

    def finalize_event(self, extra: dict[str, Any]) -> dict[str, float]:
        """The numbers of ``finalize``'s report that go into the run's ``eval`` event."""
        return {}

    def evaluate(
        self, run: Any, request: EvalRequest, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Evaluate a trained run (``RunPaths``) on ``request.split``: write ``eval/`` files,
        append an ``eval`` event, return the report (``eval --json`` prints it)."""
        raise UsageError(f"{self.name} runs cannot be evaluated (the task has no evaluation)")

    def eval_messages(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        """``(level, text)`` lines an evaluation says on stderr, level "log" or "warn"."""
        return [("warn", message) for message in result.get("warnings") or []]

    def render_eval(self, result: dict[str, Any], console: Any) -> None:
        """Print an evaluation's report for people on a Rich console (default: its metrics)."""
        from rich.table import Table

        table = Table(title=f"{result.get('run')} · {result.get('split')}")
        table.add_column("metric", style="bold")
        table.add_column("value", justify="right")
        for key, value in (result.get("metrics") or {}).items():
            if isinstance(value, int | float):
                table.add_row(key, f"{value:.4f}")
        console.print(table)
        for name, path in (result.get("files") or {}).items():
            console.print(f"[dim]{name:>11}[/] {path}", highlight=False)

    def load_predictor(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device | None = "cpu",
        *,
        run: Any = None,
        use_ema: bool | None = None,
        state: dict[str, Any] | None = None,
    ) -> Predictor:
        """The run's model ready for inference. ``run``: the run's ``RunPaths`` (None for a bare
        checkpoint file); ``state``: the checkpoint when the caller has read it already."""
        raise UsageError(f"{self.name} runs have no predictor")

    # True when ``load_tile_head`` gives a head that decides each slide tile from the CLS of the
    # backbone a nuclei run already ran (``predict --organ-run``)
    decides_tiles: bool = False

    def load_tile_head(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device | None = "cpu",
        *,
        run: Any = None,
        state: dict[str, Any] | None = None,
    ) -> Any:
        """The run's per-tile head without a backbone of its own (``decides_tiles`` tasks):
        ``classes``, ``temperature``, ``probabilities(cls) -> (N, C)``, ``backbone_identity()``
        and ``describe()`` (``cellbench.inference.tile_head``)."""
        raise UsageError(f"{self.name} runs make no per-tile decision from a backbone's CLS")
