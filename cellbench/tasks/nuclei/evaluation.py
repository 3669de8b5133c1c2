"""Evaluate a trained nuclei run: predicted maps -> post-processing -> the PanNuke report.

``evaluate_nuclei_run`` rebuilds the run's decoder from a checkpoint, runs the family's tiles of
the chosen fold through it (tokens from the run's feature store, or the frozen backbone for an
``--online-features`` run), post-processes the maps with the run's frozen parameters
(``postproc.json``; HoVer-Net's defaults, said so, when the run was never tuned), scores them
with the nuclei metrics (bPQ/mPQ by the PanNuke rules, image averages, mPQ+, Dice, AJI, per
type, per tissue) and writes into ``runs/<run>/eval/``:

    <split>-<checkpoint>.json         the report, the parameters used and where they came from
    tiles_<split>-<checkpoint>.csv    one row per tile (bPQ, mPQ, PQ per type, Dice, AJI)

With ``tune=True`` the validation fold (never the test fold) is predicted once into a float16
cache, ``tune_postproc`` searches the parameters for the best val bPQ, and the result is frozen
into ``postproc.json`` before the evaluation. ``export`` writes the post-processed predictions
in PanNuke format (``cellbench.tasks.nuclei.export.pannuke``) so ``cellbench eval pannuke``
re-scores them.

Folds follow the PanNuke protocol of the run's ``data.split``; evaluating on the fold the run
trained on is refused unless ``allow_leak``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.config import Config, config_from_dict
from cellbench.engine.device import resolve_device
from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.metrics.nuclei import json_safe
from cellbench.metrics.tile_pool import TilePool
from cellbench.runs.events import EventWriter
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import lock_if_free
from cellbench.tasks.nuclei.pipeline import MapsCache, nuclei_of_maps, score_nuclei
from cellbench.tasks.nuclei.postproc import PostProcParams
from cellbench.tasks.nuclei.postproc_tune import load_frozen, save_frozen, tune_postproc

SPLITS = ("val", "test")
HEADLINE = ("bPQ", "mPQ", "bPQ_image_avg", "mPQ_image_avg", "mPQ_plus", "dice", "aji")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


# --------------------------------------------------------------------------- the model


def fold_dataset(config: Config, fold: int):
    """The run's family tiles of ``fold`` with their tokens (or raw tiles for online features),
    built the way the nuclei task builds its train and val sets."""
    from cellbench.tasks.nuclei.dataset import NucleiDataset
    from cellbench.tasks.nuclei.tokens import NucleiTokenDataset

    mean, std = tuple(config.data.mean), tuple(config.data.std)
    token_files = None
    root = Path(config.data.path) if config.data.path else None
    if not config.nuclei.online_features:
        from cellbench.features.store import open_feature_store

        if not config.data.features:
            raise BadInputError("the run's config names no feature store (data.features)")
        store = open_feature_store(
            config.data.features, folds=[fold], force=config.data.features_force
        )
        identity = store.fold(fold).manifest
        root = Path((identity.get("source") or {}).get("store") or store.path.parent.parent)
        prep = identity.get("preprocessing") or store.manifest.get("preprocessing") or {}
        mean = tuple(prep.get("mean") or mean)
        std = tuple(prep.get("std") or std)
        token_files = {fold: store.fold(fold).path / "tokens.npy"}
    else:  # online features: the backbone's own normalisation (its profile; no weights needed)
        from cellbench.models.backbones import load_backbone_profile

        profile = load_backbone_profile(config.nuclei.backbone)
        mean, std = tuple(profile.mean), tuple(profile.std)
    tiles = NucleiDataset(
        root, [fold], family=config.data.family, mean=mean, std=std, families=config.data.families
    )
    if len(tiles) == 0:
        where = f"family {config.data.family}" if config.data.family else "any tissue"
        raise BadInputError(f"{root}: no tiles of {where} in fold {fold}")
    return NucleiTokenDataset(tiles, token_files)


def load_decoder(
    state: dict[str, Any], path: Path, config: Config, dataset, device=None
) -> tuple[Any, bool]:
    """The run's model with its checkpoint weights (EMA when the run validated on EMA); an
    ``--online-features`` run's backbone is built on ``device`` (None: ``train.device``)."""
    from cellbench.models import strip_prefixes
    from cellbench.tasks import get_task

    task = get_task("nuclei")
    task.configure(config)
    if config.nuclei.online_features:
        task.backbone(config, device)  # build_decoder takes it: on the device asked, not train's
    model = task.build_decoder(config, dataset.token_shape)
    use_ema = bool(config.train.eval_ema) and state.get("ema") is not None
    weights = strip_prefixes(dict(state["ema"] if use_ema else state["model"]))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise BadInputError(f"{path}: weights do not fit the run's decoder ({exc})") from exc
    model.eval().requires_grad_(False)
    return model, use_ema


@torch.inference_mode()
def predicted_maps(
    model: torch.nn.Module,
    dataset,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(np_prob (B, H, W), hv (B, 2, H, W), nt_prob (B, 6, H, W)) float32 per batch, in order."""
    from cellbench.engine.step import eval_step, to_device

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    inputs_keys = ("tokens", "raw", "image")
    done = 0
    for batch in loader:
        inputs = {k: batch[k] for k in inputs_keys if k in batch}
        outputs, _ = eval_step(model, None, to_device(inputs, device), None)
        done += len(batch["image"])
        if on_batch is not None:
            on_batch(done, len(dataset))
        yield (
            outputs["np"].softmax(dim=1)[:, 1].cpu().numpy(),
            outputs["hv"].cpu().numpy(),
            outputs["nt"].softmax(dim=1).cpu().numpy(),
        )


class _Truth:
    """Ground-truth instance or type maps of a dataset's tiles, read one tile at a time from
    the store's memory maps."""

    def __init__(self, dataset, name: str):
        from cellbench.data.store import open_fold

        tiles = dataset.tiles
        self.index = tiles.index
        self.arrays = {f: getattr(open_fold(tiles.root, f), name) for f in tiles.folds}

    def __getitem__(self, i: int) -> np.ndarray:
        fold, tile = self.index[i]
        return np.asarray(self.arrays[fold][tile])


# --------------------------------------------------------------------------- the evaluation


def check_leak(config: Config, fold: int, split: str, allow_leak: bool) -> None:
    """Refuse the fold the run trained on (its numbers would be inflated) unless told."""
    if fold in _trained_folds(config) and not allow_leak:
        raise UsageError(
            f"fold {fold} is the fold this run trained on (data.split {config.data.split}: "
            f"train fold {fold}); its numbers would be inflated. --allow-leak evaluates anyway"
        )


def _stage_of(config: Config, fold: int) -> str:
    from cellbench.data.families import folds_for_split

    split = folds_for_split(config.data.split)
    return "val" if fold in split.val else "test"


def _fold_of(config: Config, split: str) -> int:
    from cellbench.data.families import folds_for_split

    return folds_for_split(config.data.split).for_stage(split)[0]


def _refuse_tuning_while_trained(run: RunPaths) -> None:
    """postproc.json is frozen into the run and used by every later eval and predict; tuned
    while a training still replaces best.pt, it would fit a checkpoint the run no longer has."""
    from cellbench.runs.lock import lock_holder_alive, read_lock

    if lock_holder_alive(run.lock):
        info = read_lock(run.lock) or {}
        raise RunConflict(
            f"{run.root}: being trained (pid {info.get('pid')} on {info.get('host')}); "
            "--tune-postproc would freeze parameters fitted to a checkpoint the training will "
            "replace: tune once it ends"
        )


def tune_run_postproc(
    run: RunPaths,
    config: Config,
    model: torch.nn.Module,
    device: torch.device,
    batch_size: int,
    workers: int,
    progress: Progress | None = None,
    pool: TilePool | None = None,
) -> dict[str, Any]:
    """Predict the val fold once, search the parameters for its best bPQ, freeze them
    (post-processing on ``pool``, else on a pool of ``workers`` per trial)."""
    fold = _fold_of(config, "val")
    dataset = fold_dataset(config, fold)
    sample = dataset.tiles.sample(0)
    h, w = sample.inst.shape
    cache = MapsCache(run.eval_dir / f".maps-val-tmp-{os.getpid()}")
    try:
        cache.write(
            predicted_maps(
                model,
                dataset,
                device,
                batch_size,
                on_batch=(lambda d, t: progress("predict val", d, t)) if progress else None,
            ),
            len(dataset),
            h,
            w,
        )
        np_prob, hv, _ = cache.read()
        truth = _Truth(dataset, "inst")
        true_inst = np.stack([truth[i] for i in range(len(dataset))])
        count = [0]

        def on_trial(_trial) -> None:
            count[0] += 1
            if progress:
                progress("tune post-processing", count[0], 0)

        result = tune_postproc(
            np_prob,
            hv,
            true_inst,
            dataset.tiles.tissues,
            workers=workers,
            on_trial=on_trial,
            pool=pool,
        )
    finally:
        shutil.rmtree(cache.folder, ignore_errors=True)
    frozen = save_frozen(
        run.root,
        result,
        {"split": "val", "folds": [fold], "family": config.data.family},
    )
    return {**result.to_dict(), "path": str(frozen.path), "folds": [fold]}


def evaluate_nuclei_run(
    run: RunPaths,
    split: str = "test",
    checkpoint: str = "best",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    allow_leak: bool = False,
    tune: bool = False,
    export: str | Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    fold: int | None = None,
) -> dict[str, Any]:
    """Evaluate a nuclei run on its ``split`` fold (or on ``fold``, any fold of the store: the
    run's training fold only with ``allow_leak``); see the module docstring."""
    from cellbench.engine.checkpoint import checkpoint_file, read_checkpoint
    from cellbench.metrics.nuclei_report import fold_tile_rows, write_tile_csv
    from cellbench.tasks.nuclei.export.pannuke import pannuke_export

    if split not in SPLITS:
        raise UsageError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    if fold is not None and fold not in (1, 2, 3):
        raise UsageError(f"--fold {fold}: PanNuke folds are 1, 2 and 3")
    if tune:
        _refuse_tuning_while_trained(run)
    path = checkpoint_file(run, checkpoint)
    state = read_checkpoint(path)
    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    if config.task != "nuclei":
        raise BadInputError(f"{path}: a '{config.task}' run, not a nuclei run")
    if fold is None:
        fold = _fold_of(config, split)
    else:
        split = "train" if fold in _trained_folds(config) else _stage_of(config, fold)
    check_leak(config, fold, split, allow_leak)
    dataset = fold_dataset(config, fold)
    dev = resolve_device(device if device is not None else config.train.device)
    model, ema = load_decoder(state, path, config, dataset, dev)
    model.to(dev)
    batch = batch_size or config.train.batch_size

    # one pool of post-processing workers for the whole evaluation (tuning trials, then every
    # model batch of the fold: the model predicts a batch while the workers post-process the
    # previous ones); ``postproc_processes`` in the result says how many took part
    with TilePool(workers, preload=("cellbench.tasks.nuclei.postproc",)) as pool:
        tuning = None
        if tune:
            tuning = tune_run_postproc(run, config, model, dev, batch, workers, progress, pool)
        frozen = load_frozen(run.root)
        params = frozen.params if frozen is not None else PostProcParams()
        postproc = {
            "params": params.to_dict(),
            "source": "tuned" if frozen is not None else "default",
            "description": frozen.describe()
            if frozen is not None
            else "HoVer-Net's default post-processing parameters (the run was never tuned: "
            "cellbench eval --run RUN --tune-postproc)",
        }

        tissues = list(dataset.tiles.tissues)
        sample = dataset.tiles.sample(0)
        h, w = sample.inst.shape
        maps = predicted_maps(
            model,
            dataset,
            dev,
            batch,
            on_batch=(lambda d, t: progress(f"predict {split}", d, t)) if progress else None,
        )
        nuclei = nuclei_of_maps(maps, params, chunk=_chunk_size(batch, workers), pool=pool)
        truth_inst, truth_types = _Truth(dataset, "inst"), _Truth(dataset, "types")
        info = {"run": run.root.name, "checkpoint": checkpoint, "split": split, "fold": fold}
        if export is not None:
            info["tiles_of_fold"] = [tile for _, tile in dataset.tiles.index]
            with pannuke_export(
                export, tissues, h, w, {**info, "postproc": postproc}, with_truth=True
            ) as writer:

                def sink(i: int, inst: np.ndarray, kinds: np.ndarray) -> None:
                    writer.write(inst, kinds, truth_inst[i], truth_types[i])

                scored = score_nuclei(nuclei, truth_inst, truth_types, tissues, sink=sink)
        else:
            scored = score_nuclei(nuclei, truth_inst, truth_types, tissues)
        processes = len(pool.pids)

    metrics = json_safe(scored.result.to_dict())
    result: dict[str, Any] = {
        "run": run.root.name,
        "task": "nuclei",
        "split": split,
        "fold": fold,
        "family": config.data.family,
        "checkpoint": checkpoint,
        "checkpoint_path": str(path),
        "epoch": state.get("epoch"),
        "ema": ema,
        "device": str(dev),
        "tiles": len(dataset),
        "postproc": postproc,
        "postproc_processes": processes,
        "tuning": tuning,
        "export": str(export) if export is not None else None,
        "metrics": metrics,
        "leak": fold in _trained_folds(config),
        "warnings": [],
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    stem = f"{split}-{checkpoint}" if split != "train" else f"fold{fold}-{checkpoint}"
    files = {
        "json": run.eval_dir / f"{stem}.json",
        "tiles_csv": run.eval_dir / f"tiles_{stem}.csv",
    }
    result["files"] = {k: str(v) for k, v in files.items()}
    # lock None: a live training holds the run; write our files, leave its events alone
    with lock_if_free(run.lock) as lock:
        result["event_written"] = lock is not None
        write_tile_csv(files["tiles_csv"], fold_tile_rows(fold, scored.tiles, tissues))
        atomic_write_json(files["json"], result)  # last: its presence means the CSV is there
        if lock is not None:
            with EventWriter(run.events) as writer:
                writer.emit(
                    "eval",
                    split=split,
                    checkpoint=checkpoint,
                    metrics={k: metrics.get(k) for k in HEADLINE},
                    postproc=postproc["source"],
                )
    return result


def _chunk_size(batch: int, workers: int) -> int:
    """Tiles per post-processing chunk: a model batch split so that it feeds every worker (at
    most 16 tiles, the memory bound of a chunk)."""
    return max(1, min(16, math.ceil(batch / max(1, workers))))


def _trained_folds(config: Config) -> tuple[int, ...]:
    from cellbench.data.families import folds_for_split

    return folds_for_split(config.data.split).train
