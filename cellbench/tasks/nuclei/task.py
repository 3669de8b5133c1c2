"""Task ``nuclei``: a CellViT-style decoder per organ family on frozen-backbone tokens.

``cellbench train --family digestive --features STORE/features/TAG``: the tiles of the family's
tissues in the split's train fold (``data.split``, PanNuke protocol) train the decoder, the same
family's tiles of the val fold validate it. Tokens come from the feature store (memory-mapped,
refused when stale or failed: ``cellbench.features.store.open_feature_store``), or, with
``nuclei.online_features``, from the frozen backbone run on each (augmented) batch.

Validation metrics (history ``val_<name>``):

- ``np_dice``: Dice of the thresholded nucleus map (argmax of NP) over every val pixel;
- ``hv_mse``: MSE of the HV maps over the ground truth's nucleus pixels (the loss term
  ``hv_mse`` averages over every pixel, background included);
- ``nt_accuracy``: pixel accuracy of the type map (argmax of NT) over nucleus pixels;
- ``bpq``: binary PQ after HV post-processing (``cellbench.tasks.nuclei.postproc``, default
  parameters), PanNuke averaging (per tissue, then over tissues), every ``eval.pq_every``
  epochs and at the last epoch (blank in the other rows).

Checks: the HV failure signatures of seeds/001 (HV MSE in the thousands: HV targets stored as
int8; NP Dice near 0 after two epochs) are errors; a profile's ``expect:`` may hold
family-scoped ranges (``digestive.np_dice: [0.94, 1.0]``) that apply to that family's runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cellbench.config import Config
from cellbench.engine.checks import Finding
from cellbench.errors import BadInputError, UsageError
from cellbench.tasks import register_task
from cellbench.tasks.base import (
    EvalRequest,
    LossSums,
    MetricAccumulator,
    Progress,
    Task,
    TaskData,
)

TYPE_CLASSES = ["Background", "Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"]
INPUT_KEYS = ("tokens", "raw", "image")
TARGET_KEYS = ("np", "hv", "types", "inst", "tissue")
# seeds/001 failure signatures
HV_MSE_BROKEN = 100.0  # int8 HV targets gave 4681 instead of ~0.01
NP_DICE_BROKEN = 0.05  # int8 masks gave 0.02 instead of ~0.96


@dataclass
class NucleiData:
    train: Any
    val: Any
    test: Any | None
    classes: list[str]
    warnings: list[str] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    family: str | None = None
    folds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    token_shape: tuple[int, ...] | None = None  # (L, G, G, D) of the store; None online
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class NucleiAccumulator(MetricAccumulator):
    """Loss terms, NP Dice, HV MSE and NT accuracy as device sums; bPQ tile by tile on the CPU
    (post-processing and matching) when ``with_pq``."""

    def __init__(self, device: torch.device, with_pq: bool):
        self.losses = LossSums(device)
        # np intersection, np predicted, np true, hv squared error in nuclei, nt correct
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)
        self.with_pq = with_pq
        self.pq_scores: list[Any] = []
        self.pq_tissues: list[str] = []

    def update(self, outputs, targets, losses) -> None:
        nuclei = targets["np"].bool()
        predicted = outputs["np"].argmax(dim=1).bool()
        hv_error = ((outputs["hv"] - targets["hv"]) ** 2).sum(dim=1)  # over the 2 channels
        types_right = (outputs["nt"].argmax(dim=1) == targets["types"]) & nuclei
        self.sums += torch.stack(
            [
                (predicted & nuclei).sum(),
                predicted.sum(),
                nuclei.sum(),
                (hv_error * nuclei).sum() / 2,  # per channel value, like the loss's MSE
                types_right.sum(),
            ]
        ).double()
        self.losses.add(losses, nuclei.shape[0])
        if self.with_pq:
            self._score_pq(outputs, targets)

    def _score_pq(self, outputs, targets) -> None:
        from cellbench.data.families import TISSUES
        from cellbench.metrics.nuclei import score_tile
        from cellbench.tasks.nuclei.postproc import postprocess_tile

        np_prob = outputs["np"].softmax(dim=1)[:, 1].cpu().numpy()
        hv = outputs["hv"].cpu().numpy()
        true_inst = targets["inst"].cpu().numpy()
        for i in range(len(np_prob)):
            inst, _ = postprocess_tile(np_prob[i], hv[i])
            self.pq_scores.append(score_tile(true_inst[i], None, inst, None))
            self.pq_tissues.append(TISSUES[int(targets["tissue"][i])])

    def all_reduce(self) -> None:
        """Pixel counts summed over ranks; per-tile PQ counts gathered, in dataset order (each
        rank validates one contiguous block, in rank order), so bPQ is computed from the same
        per-tile counts as with one process."""
        from cellbench.engine.distributed import all_reduce_sum, gather_objects

        all_reduce_sum(self.sums)
        self.losses.all_reduce()
        if self.with_pq:
            parts = gather_objects((self.pq_scores, self.pq_tissues))
            self.pq_scores = [s for scores, _ in parts for s in scores]
            self.pq_tissues = [t for _, tissues in parts for t in tissues]

    def compute(self) -> dict[str, float]:
        inter, pred, true, hv_sq, right = self.sums.tolist()
        out = {
            **self.losses.compute(),
            "np_dice": 2 * inter / (pred + true) if pred + true else math.nan,
            "hv_mse": hv_sq / true if true else math.nan,
            "nt_accuracy": right / true if true else math.nan,
        }
        if self.with_pq and self.pq_scores:
            from cellbench.metrics.nuclei import summarise

            out["bpq"] = summarise(self.pq_scores, self.pq_tissues).bPQ
        return out


def _feature_store(config: Config, folds: list[int]):
    from cellbench.features.store import open_feature_store

    if not config.data.features:
        raise UsageError(
            "task nuclei: --features STORE/features/TAG is needed (or --online-features with "
            "--set nuclei.backbone=NAME)"
        )
    return open_feature_store(config.data.features, folds=folds, force=config.data.features_force)


@register_task("nuclei")
class NucleiTask(Task):
    metric_names = ("np_dice", "hv_mse", "nt_accuracy", "bpq")
    metric_directions = {"hv_mse": "min", "np_dice": "max", "nt_accuracy": "max", "bpq": "max"}
    overfit_metric = "np_dice"
    config_section = "nuclei"
    per_family = True
    eval_options = frozenset({"tune_postproc", "allow_leak", "export", "workers", "fold"})
    pq_every = 0  # eval.pq_every and train.epochs, from ``configure``
    last_epoch = 0

    def needs_feature_store(self, config: Config) -> bool:
        return not config.nuclei.online_features  # the backbone runs on the fly instead

    def reads_data_path(self, config: Config) -> bool:
        return config.nuclei.online_features  # tiles from the store; else the feature store

    @property
    def loss_names(self) -> tuple[str, ...]:  # type: ignore[override]
        from cellbench.tasks.nuclei.losses import TERMS

        return TERMS

    # ------------------------------------------------------------------ data

    def build_data(self, config: Config) -> TaskData:
        from cellbench.data.augment import NucleiAugment
        from cellbench.data.families import check_family, folds_for_split
        from cellbench.tasks.nuclei.dataset import NucleiDataset
        from cellbench.tasks.nuclei.tokens import NucleiTokenDataset

        family = config.data.family
        if family is not None:
            check_family(family, config.data.families)
        split = folds_for_split(config.data.split)
        wanted = [split.train[0], split.val[0]]
        n = config.nuclei
        warnings: list[str] = []
        if n.online_features:
            backbone = self.backbone(config)
            root = Path(config.data.path)
            mean, std = tuple(backbone.profile.mean), tuple(backbone.profile.std)
            token_files = None
        else:
            store = _feature_store(config, wanted)
            warnings += store.warnings
            identity = store.fold(wanted[0]).manifest  # what the features were extracted from
            # the canonical store the features describe: the layout puts them inside it, and the
            # staleness check reads that store (a moved store keeps working)
            root = store.path.parent.parent
            prep = identity.get("preprocessing") or store.manifest.get("preprocessing") or {}
            mean = tuple(prep.get("mean") or config.data.mean)
            std = tuple(prep.get("std") or config.data.std)
            token_files = {k: store.fold(k).path / "tokens.npy" for k in wanted}
        augment = NucleiAugment.from_config(config.data) if config.data.augment else None

        def tiles(fold: int) -> NucleiDataset:
            return NucleiDataset(
                root,
                [fold],
                family=family,
                mean=mean,
                std=std,
                families=config.data.families,
                max_samples=config.data.max_samples,
            )

        def tokens(fold: int):
            return None if token_files is None else {fold: token_files[fold]}

        train_tiles, val_tiles = tiles(split.train[0]), tiles(split.val[0])
        for name, ds in (("train", train_tiles), ("val", val_tiles)):
            if len(ds) == 0:
                where = f"family {family}" if family else "any tissue"
                raise BadInputError(f"{root}: no {name} tiles of {where} in fold {ds.folds[0]}")
        train = NucleiTokenDataset(train_tiles, tokens(split.train[0]), augment)
        val = NucleiTokenDataset(val_tiles, tokens(split.val[0]))
        counts = {
            stage: {t: ds.tiles.tissues.count(t) for t in sorted(set(ds.tiles.tissues))}
            for stage, ds in (("train", train), ("val", val))
        }
        return NucleiData(
            train=train,
            val=val,
            test=None,
            classes=list(TYPE_CLASSES),
            warnings=warnings,
            class_counts=counts,
            family=family,
            folds={"train": split.train, "val": split.val, "test": split.test},
            token_shape=train.token_shape,
            mean=mean,
            std=std,
        )

    def backbone(self, config: Config, device: str | torch.device | None = None):
        """The frozen backbone of ``--online-features``, built once per task instance on
        ``device``: the device asked of ``eval``/``predict``, so the tokens land where the
        decoder runs. ``None``: the backbone built already, else on ``train.device`` (training)."""
        from cellbench.engine.device import resolve_device

        cached = getattr(self, "_backbone", None)
        if cached is not None and (device is None or cached.device == resolve_device(device)):
            return cached
        from cellbench.models.backbones import build_backbone

        n = config.nuclei
        if not n.backbone:
            raise UsageError("--online-features needs --set nuclei.backbone=NAME")
        cached = build_backbone(
            n.backbone,
            n.backbone_weights,
            blocks=n.blocks,
            device=config.train.device if device is None else device,
        )
        self._backbone = cached
        return cached

    def run_name(self, config: Config) -> str:
        return f"nuclei-{config.data.family or 'all'}"  # the decoder is the model: its family

    def evaluate(self, run, request: EvalRequest, progress: Progress | None = None):
        from cellbench.tasks.nuclei.evaluation import evaluate_nuclei_run

        return evaluate_nuclei_run(
            run,
            split=request.split,
            checkpoint=request.checkpoint,
            batch_size=request.batch_size,
            device=request.device,
            allow_leak=request.allow_leak,
            tune=request.tune_postproc,
            export=request.export,
            workers=request.workers,
            progress=progress,
            fold=request.fold,
        )

    def eval_messages(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        from cellbench.tasks.nuclei.render import nuclei_eval_messages

        return nuclei_eval_messages(result) + super().eval_messages(result)

    def render_eval(self, result: dict[str, Any], console: Any) -> None:
        from cellbench.tasks.nuclei.render import render_nuclei_eval

        render_nuclei_eval(result, console)

    def load_predictor(self, checkpoint, device="cpu", *, run=None, use_ema=None, state=None):
        from cellbench.engine.checkpoint import read_checkpoint
        from cellbench.tasks.base import run_folder
        from cellbench.tasks.nuclei.predictor import load_nuclei_model

        state = state if state is not None else read_checkpoint(checkpoint)
        return load_nuclei_model(state, Path(checkpoint), run_folder(checkpoint, run), device)

    def split_batch(self, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        inputs = {k: batch[k] for k in INPUT_KEYS if k in batch}
        return inputs, {k: batch[k] for k in TARGET_KEYS}

    # ------------------------------------------------------------------ model and losses

    def build_model(self, config: Config, data: TaskData) -> nn.Module:
        return self.build_decoder(config, data.token_shape)

    def build_decoder(self, config: Config, token_shape: tuple[int, ...] | None) -> nn.Module:
        """The decoder for tokens of ``token_shape`` (L, G, G, D; only L and D matter), or with
        the frozen backbone in front of it (``None``: ``--online-features``)."""
        from cellbench.tasks.nuclei.decoder import NucleiDecoder, OnlineFeatureDecoder

        n = config.nuclei
        if token_shape is not None:
            blocks, _, _, dim = token_shape
            backbone = None
        else:
            backbone = self.backbone(config)
            blocks, dim = len(backbone.blocks), backbone.dim
        if len(n.widths) != blocks:
            raise UsageError(
                f"nuclei.widths={n.widths}: one width per token block, the features have {blocks}"
            )
        decoder = NucleiDecoder(
            embed_dim=dim,
            num_blocks=blocks,
            widths=n.widths,
            stem=n.stem,
            dropout=config.model.drop_rate,
            hv_activation=n.hv_activation,
            first_stage_blocks=n.first_stage_blocks,
        )
        return decoder if backbone is None else OnlineFeatureDecoder(backbone, decoder)

    def train_criterion(self, config: Config, data: TaskData) -> nn.Module:
        from cellbench.tasks.nuclei.losses import NucleiLoss

        try:
            return NucleiLoss(dataclasses.asdict(config.nuclei.loss))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc

    eval_criterion = train_criterion

    def metrics(self, data: TaskData, device: torch.device, epoch: int | None = None):
        return NucleiAccumulator(device, with_pq=self._pq_due(epoch))

    def _pq_due(self, epoch: int | None) -> bool:
        every, last = self.pq_every, self.last_epoch
        if epoch is None or every <= 0:
            return False
        return epoch % every == 0 or epoch == last

    def configure(self, config: Config) -> None:
        self.pq_every = config.eval.pq_every
        self.last_epoch = config.train.epochs

    def set_backbone_trainable(self, model: nn.Module, trainable: bool) -> int:
        return 0  # the backbone is frozen by design: only the decoder trains

    # ------------------------------------------------------------------ checks

    def epoch_findings(self, row: dict[str, Any], config: Config) -> list[Finding]:
        found = []
        hv = row.get("val_hv_mse")
        if hv is not None and math.isfinite(hv) and hv > HV_MSE_BROKEN:
            found.append(
                Finding(
                    "hv_targets",
                    "error",
                    f"val HV MSE {hv:.4g} (expected ~0.01-0.3): HV targets out of [-1, 1]? "
                    "seeds/001 saw ~4681 when HV was stored as int8",
                )
            )
        dice = row.get("val_np_dice")
        if dice is not None and row["epoch"] >= 2 and dice < NP_DICE_BROKEN:
            found.append(
                Finding(
                    "np_targets",
                    "error",
                    f"val NP Dice {dice:.3g} after {row['epoch']} epochs: masks or features "
                    "broken? seeds/001 saw 0.02 with int8 masks",
                )
            )
        return found

    def model_label(self, config: Config) -> str:
        return "nuclei_decoder"  # model.name plays no part: the decoder is the model

    def undefined_metric_reason(self, config: Config) -> str:
        from cellbench.data.families import folds_for_split

        fold = folds_for_split(config.data.split).val[0]
        family = f" of family {config.data.family}" if config.data.family else ""
        return f"val fold {fold} has no nuclei{family}"

    def expect_ranges(self, config: Config) -> dict[str, list[float]]:
        """The profile's ``expect:``: plain keys, and ``<family>.<metric>`` keys of this family."""
        family = config.data.family
        out = {}
        for key, bounds in (config.expect or {}).items():
            scope, dot, metric = key.partition(".")
            if not dot:
                out[key] = bounds
            elif scope == family:
                out[metric] = bounds
        return out
