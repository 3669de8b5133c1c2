"""Frozen ViT backbones: the one place that builds them, loads their weights, preprocesses tiles
and reads features out of them. ``features extract``, online-feature training and ``predict``
all go through here, so a tile is always seen the same way.

    profile = load_backbone_profile("h-optimus-0")   # shipped profile, a YAML file, or a timm ViT
    backbone = build_backbone(profile, weights="h0.safetensors", device="cuda")
    cls, tokens = backbone.extract(images)  # uint8 (B, H, W, 3) -> (B, D), (B, L, G, G, D)

``extract(model, x, blocks)`` is the lower-level call on an already preprocessed batch.

What is extracted (seeds/001's bug #2 was taking CLS from a raw block output): the CLS token of
``forward_features`` (after the final norm), and the raw outputs of the chosen blocks (1-based,
as the profile lists them) with the CLS and register tokens removed, as a (grid, grid) map. Both
come from one forward pass: forward hooks on the chosen blocks record their outputs while
``forward_features`` runs (timm's ``forward_intermediates`` would need a second pass or its own
final-norm path; hooks see exactly the tensors ``forward_features`` computes, for any timm ViT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import importlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cellbench.errors import BadInputError, UsageError, one_line

BACKBONES_DIR = Path(__file__).resolve().parent.parent / "profiles" / "backbones"
# profile kwargs naming a class (YAML cannot hold one): resolved from these packages only
_CLASS_KWARGS = ("mlp_layer", "act_layer", "norm_layer", "embed_layer", "block_fn", "attn_layer")
_CLASS_PACKAGES = ("timm.", "torch.nn.")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = "bilinear-antialias"  # recorded in the feature store: part of the preprocessing


@dataclass(frozen=True)
class BackboneProfile:
    """How to build a backbone and how to feed it; from ``profiles/backbones/<name>.yaml``."""

    name: str
    model: str  # timm architecture
    kwargs: dict[str, Any] = field(default_factory=dict)
    hub: str | None = None  # timm pretrained source (``hf-hub:org/name``) for --pretrained
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    blocks: tuple[int, ...] | None = None  # None: depth/4, depth/2, 3 depth/4, depth
    cls_std: tuple[float, float] | None = None  # expected CLS std range (features check)
    seed: int = 0  # random init seed when no weights are given
    source: str = ""  # the YAML file, or "timm" for a bare model name

    def preprocessing(self) -> dict[str, Any]:
        """What the feature store records (and compares) of the preprocessing."""
        return {
            "scale": "uint8/255",
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "input_size": int(self.input_size),
            "resize": RESIZE,
        }


def list_backbone_profiles() -> list[str]:
    return sorted(p.stem for p in BACKBONES_DIR.glob("*.yaml"))


def _triple(value: Any, key: str, source: str) -> tuple[float, float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 3):
        raise BadInputError(f"{source}: {key} must be a list of 3 numbers, got {value!r}")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{source}: {key} must be numbers, got {value!r}") from exc
    if key.endswith("std") and min(out) <= 0:
        raise BadInputError(f"{source}: {key} must be positive, got {value!r}")
    return out  # type: ignore[return-value]


def profile_from_dict(data: dict[str, Any], name: str, source: str) -> BackboneProfile:
    """A profile from its YAML mapping; unknown keys and bad values name ``source``."""
    known = {"model", "hub", "kwargs", "preprocessing", "blocks", "expect", "seed"}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"{source}: unknown key '{key}'{hint}")
    if not isinstance(data.get("model"), str):
        raise BadInputError(f"{source}: 'model' (a timm ViT name) is required")
    kwargs = data.get("kwargs") or {}
    prep = data.get("preprocessing") or {}
    if not isinstance(kwargs, dict) or not isinstance(prep, dict):
        raise BadInputError(f"{source}: 'kwargs' and 'preprocessing' must be mappings")
    blocks = data.get("blocks")
    if blocks is not None:
        blocks = parse_blocks(blocks, source)
    cls_std = (data.get("expect") or {}).get("cls_std")
    if cls_std is not None:
        if not (isinstance(cls_std, list) and len(cls_std) == 2):
            raise BadInputError(f"{source}: expect.cls_std must be [low, high], got {cls_std!r}")
        cls_std = (float(cls_std[0]), float(cls_std[1]))
    size = prep.get("input_size", kwargs.get("img_size", 224))
    if not isinstance(size, int) or size < 8:
        raise BadInputError(f"{source}: preprocessing.input_size must be an integer >= 8")
    return BackboneProfile(
        name=name,
        model=data["model"],
        kwargs=dict(kwargs),
        hub=data.get("hub"),
        mean=_triple(prep.get("mean", IMAGENET_MEAN), "preprocessing.mean", source),
        std=_triple(prep.get("std", IMAGENET_STD), "preprocessing.std", source),
        input_size=size,
        blocks=blocks,
        cls_std=cls_std,
        seed=int(data.get("seed", 0)),
        source=source,
    )


def parse_blocks(value: Any, source: str = "--blocks") -> tuple[int, ...]:
    """``10,20,30,40`` or ``[10, 20, 30, 40]`` -> (10, 20, 30, 40); 1-based, increasing."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    try:
        blocks = tuple(int(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{source}: expected block numbers like 10,20,30,40, got {value!r}"
        ) from exc
    if not blocks or min(blocks) < 1 or list(blocks) != sorted(set(blocks)):
        raise UsageError(f"{source}: block numbers are 1-based and increasing, got {value!r}")
    return blocks


def load_backbone_profile(name: str) -> BackboneProfile:
    """A shipped profile (``h-optimus-0``), a YAML file, or any timm ViT name (``vit_small_...``:
    timm's own mean, std and input size)."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"{path}: backbone profile not found")
        return profile_from_dict(_read_yaml(path), path.stem, str(path.resolve()))
    shipped = BACKBONES_DIR / f"{name}.yaml"
    if shipped.is_file():
        return profile_from_dict(_read_yaml(shipped), name, f"shipped:{name}")
    import timm

    if timm.is_model(name.split(".", 1)[0]):
        return _timm_profile(name)
    names = list_backbone_profiles()
    close = difflib.get_close_matches(name, names + timm.list_models("vit*"), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise UsageError(
        f"unknown backbone '{name}'{hint}; shipped: {', '.join(names)}, a YAML profile, "
        "or a timm ViT name"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"{path}: unreadable backbone profile ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping of profile keys")
    return data


def _timm_profile(name: str) -> BackboneProfile:
    import timm

    cfg = timm.models.get_pretrained_cfg(name.split(".", 1)[0]) if "." not in name else None
    with contextlib.suppress(Exception):
        cfg = timm.models.get_pretrained_cfg(name) or cfg
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)
    size = (getattr(cfg, "input_size", None) or (3, 224, 224))[-1]
    return BackboneProfile(
        name=name,
        model=name,
        kwargs={"num_classes": 0},
        hub=name,
        mean=mean,
        std=std,
        input_size=int(size),
        source="timm",
    )


# --------------------------------------------------------------------------- building


def _resolve_class_kwargs(kwargs: dict[str, Any], source: str) -> dict[str, Any]:
    out = dict(kwargs)
    for key in _CLASS_KWARGS:
        value = out.get(key)
        if isinstance(value, str) and value.startswith(_CLASS_PACKAGES):
            module, _, attr = value.rpartition(".")
            try:
                out[key] = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise BadInputError(f"{source}: kwargs.{key}: cannot import {value}") from exc
    return out


def create_vit(
    profile: BackboneProfile, *, pretrained: bool = False, device: str | torch.device = "cpu"
) -> nn.Module:
    """The profile's timm ViT with random (seeded) or hub weights, eval mode, no grad.

    ``device="meta"`` builds it without allocating (to count a 1.1B-parameter model's size).
    """
    import timm

    kwargs = _resolve_class_kwargs(profile.kwargs, profile.source or profile.name)
    name = profile.hub if pretrained and profile.hub else profile.model
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(profile.seed)  # random weights: the same ones every time
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UsageError(
            f"backbone {profile.name}: timm cannot build {profile.model} with its kwargs: "
            f"{one_line(exc)}"
        ) from exc
    for attr in ("blocks", "forward_features", "num_prefix_tokens", "patch_embed"):
        if not hasattr(model, attr):
            raise UsageError(f"backbone {profile.name}: {profile.model} is not a ViT (no {attr})")
    model.eval().requires_grad_(False)
    return model


def resolved_blocks(profile: BackboneProfile, model: nn.Module, blocks=None) -> tuple[int, ...]:
    """``blocks`` (or the profile's, or depth/4 steps), checked against the model's depth."""
    depth = len(model.blocks)
    chosen = tuple(blocks) if blocks else profile.blocks
    if not chosen:
        chosen = tuple(sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)}))
    if max(chosen) > depth:
        raise UsageError(f"blocks {list(chosen)}: {profile.name} has {depth} blocks (1..{depth})")
    return chosen


def state_sha256(model: nn.Module) -> str:
    """sha256 of the weights themselves (names, dtypes, shapes, bytes): the identity of random
    or hub weights, which have no file of ours to hash."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_backbone_weights(
    model: nn.Module, path: str | Path, name: str, assign: bool = False
) -> None:
    """A local ``.pth``/``.safetensors`` into ``model``, every backbone tensor required.

    timm's ViT ``checkpoint_filter_fn`` maps original checkpoints (DINOv2, DeiT...) to timm's
    names and resamples the position embedding to the profile's input size (224 -> 252).
    ``assign``: the model's tensors become the file's (a model built on the meta device).
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    from cellbench.models.weights import load_state, read_state_dict

    state = read_state_dict(path)
    with contextlib.suppress(Exception):  # not every ViT-like model's keys need (or take) it
        state = checkpoint_filter_fn(state, model)
    report = load_state(model, state, str(path), model_name=name, assign=assign)
    if report.missing:
        raise BadInputError(
            f"{path}: {len(report.missing)} backbone tensors missing for {name} "
            f"(e.g. {', '.join(report.missing[:3])}): weights of another architecture?"
        )


def _model_from_file(profile: BackboneProfile, weights: Path) -> nn.Module:
    """The profile's ViT holding the file's tensors. Built on the meta device and given the
    file's tensors (``assign``): H-optimus-0's 1.1 B parameters are never randomly initialised
    on the CPU only to be overwritten. A tensor the file cannot give (a buffer outside the
    state dict) falls back to the ordinary build-then-copy."""
    model = create_vit(profile, device="meta")
    load_backbone_weights(model, weights, profile.name, assign=True)
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    if any(t.is_meta for _, t in tensors):
        model = create_vit(profile)
        load_backbone_weights(model, weights, profile.name)
    return model


def _hub_error(profile: BackboneProfile, exc: BaseException, online: bool) -> BadInputError:
    text = f"{type(exc).__name__}: {exc}"
    source = profile.hub or profile.model
    if not online:
        return BadInputError(
            f"backbone {profile.name}: {source} is not in the local cache and the hub is "
            "unreachable (offline); pass --weights FILE"
        )
    if any(s in text for s in ("401", "403", "Gated", "gated", "Unauthorized", "restricted")):
        return BadInputError(
            f"backbone {profile.name}: {source} is gated (hub answered 401/403): accept its "
            "licence on huggingface.co and log in (huggingface-cli login), or pass --weights FILE"
        )
    return BadInputError(f"backbone {profile.name}: cannot download {source}: {one_line(exc)}")


@dataclass
class Backbone:
    """A frozen ViT ready to extract features, and what identifies them."""

    model: nn.Module
    profile: BackboneProfile
    blocks: tuple[int, ...]
    weights: dict[str, Any]  # {"source": file|hub|random, "path"?, "sha256"}
    device: torch.device
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA, None on CPU

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    @property
    def grid(self) -> tuple[int, int]:
        patch = self.model.patch_embed.patch_size
        return (self.profile.input_size // patch[0], self.profile.input_size // patch[1])

    def describe(self) -> dict[str, Any]:
        """The backbone part of a feature-store manifest."""
        kwargs = {
            k: (v if isinstance(v, str | int | float | bool | list | None) else str(v))
            for k, v in self.profile.kwargs.items()
        }
        return {
            "name": self.profile.name,
            "profile": self.profile.source,
            "model": self.profile.model,
            "kwargs": kwargs,
            "weights": self.weights,
            "num_prefix_tokens": int(self.model.num_prefix_tokens),
        }

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return preprocess(images, self.profile, self.device)

    @torch.inference_mode()
    def extract(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, H, W, 3) tiles -> CLS (B, D) and tokens (B, L, G, G, D), on the device."""
        cls, parts = self.extract_parts(images)
        return cls, stack_blocks(parts, self.grid)

    @torch.inference_mode()
    def extract_parts(
        self, images: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``extract`` before the blocks are stacked: CLS (B, D) and each block's tokens
        (B, G * G, D), views of its output. ``stack_blocks`` gives the tokens; a caller that
        copies them anyway (the feature writer) stacks them where the copy costs least."""
        x = self.preprocess(images)
        if self.amp_dtype is None:
            return extract_parts(self.model, x, self.blocks)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return extract_parts(self.model, x, self.blocks)


def build_backbone(
    profile: BackboneProfile | str,
    weights: str | Path | None = None,
    *,
    pretrained: bool = False,
    blocks: Sequence[int] | None = None,
    device: str | torch.device | None = "auto",
) -> Backbone:
    """Build the profile's ViT with weights from ``weights`` (a file), the hub (``pretrained``),
    or a seeded random init; move it to ``device`` (``auto``: CUDA when available)."""
    from cellbench.engine.device import resolve_device

    if isinstance(profile, str):
        profile = load_backbone_profile(profile)
    if weights is not None and pretrained:
        raise UsageError("--weights FILE and --pretrained exclude each other")
    if weights is not None:
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise BadInputError(f"{weights}: weights file not found (--weights)")
    dev = resolve_device(device)
    if pretrained:
        from cellbench.models.hub import offline_hub_if_unreachable

        with offline_hub_if_unreachable() as online:
            try:
                model = create_vit(profile, pretrained=True)
            except UsageError:
                raise
            except Exception as exc:  # hub, HTTP and file errors: all "cannot get the weights"
                raise _hub_error(profile, exc, online) from exc
        identity = {"source": "hub", "name": profile.hub or profile.model}
    elif weights is not None:
        from cellbench.digest_cache import file_sha256

        model = _model_from_file(profile, weights)
        # hashed once per file version (path, size, mtime), not at every load of a run
        identity = {"source": "file", "path": str(weights.resolve())}
        identity["sha256"] = file_sha256(weights)
    else:
        model = create_vit(profile)
        identity = {"source": "random", "seed": profile.seed}
    if "sha256" not in identity:
        identity["sha256"] = state_sha256(model)
    chosen = resolved_blocks(profile, model, blocks)
    model.to(dev)
    amp = None
    if dev.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Backbone(model, profile, chosen, identity, dev, amp)


# --------------------------------------------------------------------------- features


def preprocess(
    images: np.ndarray | torch.Tensor, profile: BackboneProfile, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The one preprocessing: uint8 (B, H, W, 3) -> [0, 1] -> (x - mean) / std -> resized to the
    profile's input size (bilinear, antialiased), as float32 (B, 3, S, S) on ``device``."""
    if not isinstance(images, torch.Tensor):
        images = np.asarray(images)
        # a read-only memory map: copy the batch (torch refuses to share non-writable memory)
        x = torch.from_numpy(images if images.flags.writeable else images.copy())
    else:
        x = images
    if x.dtype != torch.uint8:
        raise BadInputError(f"images: expected uint8 (B, H, W, 3) tiles, got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise BadInputError(f"images: expected shape (B, H, W, 3), got {tuple(x.shape)}")
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(profile.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(profile.std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    size = profile.input_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x.contiguous()


def extract(
    model: nn.Module, x: torch.Tensor, blocks: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS (B, D) from ``forward_features`` (final norm applied) and the raw outputs of
    ``blocks`` (1-based), prefix tokens (CLS, registers) removed: (B, L, G, G, D)."""
    patch = model.patch_embed.patch_size
    cls, parts = extract_parts(model, x, blocks)
    return cls, stack_blocks(parts, (x.shape[-2] // patch[0], x.shape[-1] // patch[1]))


def extract_parts(
    model: nn.Module, x: torch.Tensor, blocks: Sequence[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """CLS (B, D) and each of ``blocks``' outputs without the prefix tokens, (B, G * G, D)
    views: forward hooks record the blocks' outputs while ``forward_features`` runs."""
    captured: dict[int, torch.Tensor] = {}

    def keep(number: int):
        def hook(module, inputs, output):
            captured[number] = output

        return hook

    handles = [model.blocks[b - 1].register_forward_hook(keep(b)) for b in blocks]
    try:
        final = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    prefix = int(model.num_prefix_tokens)
    return final[:, 0], [captured[n][:, prefix:] for n in blocks]


def stack_blocks(
    parts: Sequence[torch.Tensor],
    grid: tuple[int, int],
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blocks' tokens (B, G * G, D) each -> (B, L, G, G, D), cast to ``dtype`` (or ``out``'s)
    on the way: one copy, not a stack and then a cast (the same values as casting the stack)."""
    first = parts[0]
    b, d = first.shape[0], first.shape[-1]
    if out is None:
        shape = (b, len(parts), *grid, d)
        out = torch.empty(shape, dtype=dtype or first.dtype, device=first.device)
    for k, part in enumerate(parts):
        out[:, k].copy_(part.reshape(b, *grid, d))
    return out


def count_parameters_meta(profile: BackboneProfile) -> int:
    """Parameters of the profile's model, built on the meta device (nothing allocated)."""
    model = create_vit(dataclasses.replace(profile), device="meta")
    return sum(p.numel() for p in model.parameters())
