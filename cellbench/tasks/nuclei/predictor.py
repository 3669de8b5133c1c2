"""Inference for nuclei runs: an image -> nuclei (instances, types, centroids, probabilities).

The decoder learned on frozen-backbone tokens; to predict a new image the same backbone (same
profile and weights: checked against the feature store's sha256, as for organ runs) makes the
tokens, the decoder gives the NP/HV/NT maps, and post-processing turns them into nuclei with the
run's frozen parameters (``postproc.json``, from ``cellbench eval --tune-postproc``; HoVer-Net's
defaults when the run was never tuned, and ``NucleiModel.postproc_source`` says which).

An image of the training tile size is one forward pass. A larger one is cut into tiles of that
size (the last row and column padded by reflection), their maps are stitched, and the stitched
maps are post-processed as one image, so a nucleus on a tile border is one nucleus, not two
halves. An image smaller than a tile is padded. Maps near tile borders see less context than
in the middle of a tile: overlapping tiles would be better and are not done.

    >>> model = cellbench.load_model("digestive")
    >>> p = cellbench.predict(model, "tile.png")
    >>> p.instances.shape, len(p.types), p.centroids[:2]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench.config import Config, config_from_dict
from cellbench.data.families import TYPE_CHANNELS
from cellbench.errors import BadInputError
from cellbench.tasks.base import Prediction, Predictor
from cellbench.tasks.nuclei.export.colors import type_name
from cellbench.tasks.nuclei.pipeline import centroids
from cellbench.tasks.nuclei.postproc import PostProcParams, postprocess_tile, type_map


@dataclass
class NucleiPrediction(Prediction):
    """Nuclei of one image. Arrays are indexed by nucleus id - 1 (id k is row k - 1)."""

    instances: np.ndarray  # (H, W) int32, ids 1..K, 0 = background
    types: np.ndarray  # (K,) uint8, 1..5 = Neoplastic..Epithelial
    probabilities: np.ndarray  # (K,) mean probability of its type over the nucleus
    centroids: np.ndarray  # (K, 2) [x, y], x = column, y = row (array index coordinates)
    nucleus_probability: np.ndarray = field(repr=False)  # (H, W) NP map

    @property
    def count(self) -> int:
        return len(self.types)

    @property
    def type_names(self) -> list[str]:
        return [type_name(int(t)) for t in self.types]

    def type_map(self) -> np.ndarray:
        """(H, W) uint8 per-pixel type, 0 = background."""
        return type_map(self.instances, self.type_dict())

    def type_dict(self) -> dict[int, tuple[int, float]]:
        """``{id: (type, probability)}`` as post-processing and the exporters take it."""
        return {
            i + 1: (int(t), float(p))
            for i, (t, p) in enumerate(zip(self.types, self.probabilities, strict=True))
        }

    def counts(self) -> dict[str, int]:
        names = self.type_names
        return {name: names.count(name) for name in sorted(set(names))}

    def to_dict(self, top: int = 1) -> dict[str, Any]:
        return {"nuclei": self.count, "types": self.counts()}

    def summary(self, top: int = 1) -> dict[str, str]:
        return counts_summary(self.count, self.counts())


def counts_summary(total: int, counts: dict[str, int]) -> dict[str, str]:
    """One table row of nuclei counts: the total, then each type (short names)."""
    from cellbench.data.families import NUCLEUS_TYPES

    return {
        "nuclei": str(total),
        **{name[:5]: str(counts.get(name, 0)) for name in NUCLEUS_TYPES},
    }


@dataclass
class NucleiModel(Predictor):
    """A nuclei run ready for inference."""

    model: torch.nn.Module  # raw uint8 tiles + normalised images -> {"np", "hv", "nt"}
    params: PostProcParams
    postproc_source: str  # "tuned (...)" or "default (...)": said wherever it is used
    config: Config
    device: torch.device
    tile_size: int
    mean: np.ndarray
    std: np.ndarray
    checkpoint_path: Path
    epoch: int | None = None
    run: Any = None
    classes: list[str] = field(default_factory=list)
    writes_files = True  # an overlay PNG and a QuPath GeoJSON per image
    predicts_slides = True  # whole slides through cellbench.inference.slide

    def slide_summary(self, row: dict[str, Any]) -> dict[str, str]:
        """The table row of a slide ``predict_slides`` finished."""
        return counts_summary(row["nuclei"], row["types"])

    def predict(self, image: Any) -> NucleiPrediction:
        from cellbench.data.image_input import to_pil

        return predict_nuclei(self, np.asarray(to_pil(image)))

    def notes(self) -> list[str]:
        return [f"post-processing: {self.postproc_source}"]

    def output_names(self, stem: str) -> list[str]:
        return [f"{stem}.overlay.png", f"{stem}.geojson"]

    def save_outputs(
        self, prediction: Prediction, image: Any, folder: Path, stem: str
    ) -> dict[str, str]:
        from cellbench import outputs
        from cellbench.tasks.nuclei.export.geojson import nuclei_geojson, write_geojson
        from cellbench.tasks.nuclei.export.overlay import write_overlay_png

        assert isinstance(prediction, NucleiPrediction)
        types = prediction.type_dict()
        overlay_path, geojson_path = folder / f"{stem}.overlay.png", folder / f"{stem}.geojson"
        write_overlay_png(overlay_path, np.asarray(image), prediction.instances, types)
        write_geojson(geojson_path, nuclei_geojson(prediction.instances, types))
        outputs.record(overlay_path)  # ours from now on: a later predict may replace them
        outputs.record(geojson_path)
        return {"overlay": str(overlay_path), "geojson": str(geojson_path)}

    def json_output(self, run_name: str, rows: list[dict[str, Any]]) -> Any:
        return {"run": run_name, "postproc": self.postproc_source, "images": rows}

    # what the slide pipeline (cellbench.inference.pipeline) asks of a predictor: it stays
    # task-agnostic and reaches the nuclei-specific steps through these

    @property
    def mpp(self) -> float:
        """µm per pixel of the images the run learned from (``data.mpp``): slides are read at it."""
        return float(self.config.data.mpp)

    def forward_tiles(self, raw: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The maps of a batch of uint8 (N, T, T, 3) tiles, one (np, hv, nt) per tile, on CPU."""
        return forward_maps(self, raw)

    def forward_tiles_and_cls(self, raw: np.ndarray) -> tuple[list[Any], torch.Tensor]:
        """``forward_tiles`` and the backbone's CLS (N, D) of the same forward pass: a per-tile
        head on the same backbone (``predict --organ-run``) costs no second backbone pass."""
        return forward_maps_and_cls(self, raw)

    def backbone_identity(self) -> dict[str, Any]:
        """The backbone this run's tokens come from, as a feature store's manifest records it:
        a per-tile head trained on the same one may read this run's CLS."""
        backbone = self.model.backbone
        return {
            "backbone": backbone.describe(),
            "preprocessing": backbone.profile.preprocessing(),
            "mpp": self.mpp,
        }

    def tile_postprocessor(self) -> Callable[[Any, tuple[int, int, int, int]], list[dict]]:
        """A picklable function: one tile's maps and core (x0, y0, x1, y1) -> the detections
        centred in the core (``export.detections``); it runs in the pipeline's worker
        processes."""
        from cellbench.tasks.nuclei.export.detections import maps_detections

        return functools.partial(maps_detections, params=self.params)

    def describe(self) -> dict[str, Any]:
        """What a slide summary records about the model."""
        return {
            "checkpoint": str(self.checkpoint_path),
            "epoch": self.epoch,
            "postproc": self.postproc_source,
        }


def _backbone(config: Config, device, task):
    if config.nuclei.online_features:
        return task.backbone(config, device)  # on the device asked, not the run's train.device
    if not config.data.features:
        raise BadInputError("the run's config names no feature store (data.features)")
    from cellbench.features.source_backbone import store_backbone

    return store_backbone(config.data.features, device)


def _tile_size(config: Config, backbone) -> int:
    """The tile size the decoder trained on: the source store's, else the backbone's input."""
    from cellbench.data.store import open_fold, store_folds
    from cellbench.features.store import read_manifest

    root = None
    if config.data.features:
        manifest = read_manifest(Path(config.data.features) / "manifest.json") or {}
        root = (manifest.get("source") or {}).get("store") or manifest.get("source_store")
    root = root or config.data.path
    try:
        folds = store_folds(Path(root)) if root else []
        if folds:
            return int(open_fold(Path(root), folds[0]).images.shape[1])
    except BadInputError:
        pass
    return int(backbone.profile.input_size)


def load_nuclei_model(
    state: dict[str, Any], path: Path, run_root: Path | None, device
) -> NucleiModel:
    """The run's backbone + decoder and frozen post-processing, from a checkpoint."""
    from cellbench.engine.device import resolve_device
    from cellbench.models import strip_prefixes
    from cellbench.tasks import get_task
    from cellbench.tasks.nuclei.decoder import OnlineFeatureDecoder
    from cellbench.tasks.nuclei.postproc_tune import load_frozen

    config = config_from_dict(state["config"], source=f"{path} (saved config)")
    dev = resolve_device(device)
    task = get_task("nuclei")
    task.configure(config)
    backbone = _backbone(config, dev, task)
    shape = (len(backbone.blocks), 0, 0, backbone.dim)  # the decoder needs L and D only
    built = task.build_decoder(config, shape)
    model = (
        built if isinstance(built, OnlineFeatureDecoder) else OnlineFeatureDecoder(backbone, built)
    )
    use_ema = bool(config.train.eval_ema) and state.get("ema") is not None
    weights = strip_prefixes(dict(state["ema"] if use_ema else state["model"]))
    # an online-features run checkpoints its OnlineFeatureDecoder (keys "decoder.*")
    target = model if config.nuclei.online_features else model.decoder
    try:
        target.load_state_dict(weights)
    except RuntimeError as exc:
        raise BadInputError(f"{path}: weights do not fit the run's decoder ({exc})") from exc
    model.to(dev).eval().requires_grad_(False)
    frozen = load_frozen(run_root) if run_root is not None else None
    params = frozen.params if frozen is not None else PostProcParams()
    source = (
        f"tuned: {frozen.describe()}"
        if frozen is not None
        else "default: HoVer-Net's parameters (the run was never tuned: cellbench eval "
        "--tune-postproc)"
    )
    mean, std = backbone.profile.mean, backbone.profile.std
    return NucleiModel(
        model=model,
        params=params,
        postproc_source=source,
        config=config,
        device=dev,
        tile_size=_tile_size(config, backbone),
        mean=np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1),
        std=np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1),
        checkpoint_path=Path(path),
        epoch=state.get("epoch"),
        run=run_root,
        classes=list(state.get("classes") or []),
    )


def _tiles(image: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, int]], tuple]:
    """The image padded (reflect) to whole tiles, the tiles' corners, and the padded shape."""
    h, w = image.shape[:2]
    ph, pw = -h % size if h > size else size - h, -w % size if w > size else size - w
    mode = "reflect" if min(h, w) > 1 and ph < h and pw < w else "edge"
    padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    corners = [
        (r, c) for r in range(0, padded.shape[0], size) for c in range(0, padded.shape[1], size)
    ]
    return padded, corners, padded.shape[:2]


@torch.inference_mode()
def forward_maps(loaded: NucleiModel, raw: np.ndarray) -> list[tuple]:
    """(np_prob (T, T), hv (2, T, T), nt_prob (6, T, T)) float32 per tile of a uint8 (N, T, T, 3)
    batch; the normalisation runs on the device, so only uint8 pixels cross the bus."""
    return forward_maps_and_cls(loaded, raw)[0]


@torch.inference_mode()
def forward_maps_and_cls(loaded: NucleiModel, raw: np.ndarray) -> tuple[list[tuple], torch.Tensor]:
    """``forward_maps`` and the backbone's CLS (N, D) of the same pass, on the device."""
    batch = torch.from_numpy(np.ascontiguousarray(raw)).to(loaded.device, non_blocking=True)
    mean = torch.as_tensor(loaded.mean, device=loaded.device)
    std = torch.as_tensor(loaded.std, device=loaded.device)
    norm = (batch.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    out, cls = loaded.model.maps_and_cls(raw=batch, image=norm)
    p = out["np"].float().softmax(dim=1)[:, 1].cpu().numpy()
    v = out["hv"].float().cpu().numpy()
    t = out["nt"].float().softmax(dim=1).cpu().numpy()
    return [(p[k], v[k], t[k]) for k in range(len(raw))], cls


@torch.inference_mode()
def predicted_maps(loaded: NucleiModel, image: np.ndarray, batch_size: int = 8):
    """Stitched (np_prob (H, W), hv (2, H, W), nt_prob (6, H, W)) of a uint8 (H, W, 3) image."""
    size = loaded.tile_size
    padded, corners, (hp, wp) = _tiles(image, size)
    np_prob = np.zeros((hp, wp), np.float32)
    hv = np.zeros((2, hp, wp), np.float32)
    nt = np.zeros((TYPE_CHANNELS, hp, wp), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        raw = np.stack([padded[r : r + size, c : c + size] for r, c in chunk])
        for (r, c), (p, v, t) in zip(chunk, forward_maps(loaded, raw), strict=True):
            np_prob[r : r + size, c : c + size] = p
            hv[:, r : r + size, c : c + size] = v
            nt[:, r : r + size, c : c + size] = t
    h, w = image.shape[:2]
    return np_prob[:h, :w], hv[:, :h, :w], nt[:, :h, :w]


def predict_nuclei(loaded: NucleiModel, image: np.ndarray) -> NucleiPrediction:
    """Nuclei of one uint8 (H, W, 3) image (see the module docstring)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    np_prob, hv, nt = predicted_maps(loaded, image)
    inst, kinds = postprocess_tile(np_prob, hv, nt, loaded.params)
    k = int(inst.max())
    types = np.array([kinds.get(i, (0, 0.0))[0] for i in range(1, k + 1)], dtype=np.uint8)
    probs = np.array([kinds.get(i, (0, 0.0))[1] for i in range(1, k + 1)], dtype=np.float32)
    return NucleiPrediction(
        instances=inst,
        types=types,
        probabilities=probs,
        centroids=centroids(inst),
        nucleus_probability=np_prob,
    )
