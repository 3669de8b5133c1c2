"""``create_model``: any timm model or a cellbench built-in, from a ``ModelConfig``.

The built-ins are registered in timm's registry, so this is one path for every model:
``timm.create_model``. Weights come from, in order of precedence:
  * ``model.weights: FILE`` with ``pretrained: false`` -> cellbench's loader (``weights.py``):
    raw or nested state_dicts, cellbench checkpoints, a mismatched classifier dropped;
  * ``model.weights: FILE`` with ``pretrained: true`` -> timm's own pretrained loader fed the file
    (``pretrained_cfg_overlay=dict(file=...)``): timm's key remapping for the architecture's
    original checkpoints, head and in_chans adaptation;
  * ``pretrained: true`` alone -> timm's hub/cache download; offline and not cached it fails
    with a one-line BadInputError, at once rather than after a minute of retries.
The model gets a ``weights_report`` attribute (a ``WeightsReport`` or None) for the caller to log.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from cellbench.config import ModelConfig
from cellbench.errors import BadInputError, UsageError, one_line
from cellbench.models.hub import offline_hub_if_unreachable
from cellbench.models.weights import WeightsReport, load_weights

BUILTIN_MODELS = ("simple_cnn", "inception_multibranch")
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def list_models(pattern: str = "") -> list[str]:
    """Built-ins first, then every timm architecture (optionally filtered by a glob)."""
    builtins = [m for m in BUILTIN_MODELS if not pattern or m in timm.list_models(pattern)]
    return builtins + [m for m in timm.list_models(pattern or "*") if m not in BUILTIN_MODELS]


def check_model_name(name: str) -> None:
    """UsageError with a did-you-mean when ``name`` is neither a built-in nor a timm model."""
    if name.startswith(HUB_PREFIXES):
        return
    architecture = name.split(".", 1)[0]  # "convnextv2_tiny.fcmae_ft_in1k" -> architecture
    if timm.is_model(architecture):
        return
    close = difflib.get_close_matches(architecture, list_models(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise UsageError(
        f"unknown model '{name}'{hint}; built-ins: {', '.join(BUILTIN_MODELS)}, "
        "or any name from timm.list_models()"
    )


def _has_pretrained_source(name: str) -> bool:
    if name.startswith(HUB_PREFIXES):
        return True
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    return bool(cfg is not None and cfg.has_weights)


def _model_kwargs(cfg: ModelConfig) -> dict:
    kwargs = dict(cfg.args)
    if cfg.drop_rate:
        # timm's models and the built-ins' entrypoints all take ``drop_rate``
        kwargs.setdefault("drop_rate", cfg.drop_rate)
    return kwargs


def _create(name: str, num_classes: int, in_chans: int, kwargs: dict, **extra) -> nn.Module:
    try:
        return timm.create_model(
            name, num_classes=num_classes, in_chans=in_chans, **kwargs, **extra
        )
    except (TypeError, ValueError, AssertionError) as exc:
        # a bad model.args entry surfaces as one of these from the model constructor
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "none"
        raise UsageError(
            f"model {name}: cannot build with model.args ({args}): {one_line(exc)}"
        ) from exc


def create_model(model_cfg: ModelConfig, num_classes: int, in_chans: int = 3) -> nn.Module:
    """Build ``model_cfg.name`` for ``num_classes`` classes and ``in_chans`` input channels."""
    name = model_cfg.name
    check_model_name(name)
    if model_cfg.num_classes is not None and model_cfg.num_classes != num_classes:
        raise UsageError(
            f"model.num_classes={model_cfg.num_classes} but the data has {num_classes} classes "
            "(--set model.num_classes=null takes the number from the data)"
        )
    kwargs = _model_kwargs(model_cfg)
    weights = Path(model_cfg.weights).expanduser() if model_cfg.weights else None
    if weights is not None and not weights.is_file():
        raise BadInputError(f"{weights}: weights file not found (model.weights / --weights)")

    report: WeightsReport | None = None
    if weights is not None and model_cfg.pretrained:
        model = _create_timm_file(name, weights, num_classes, in_chans, kwargs)
        report = WeightsReport(path=str(weights), source="timm")
        report.loaded = len(model.state_dict())
    elif model_cfg.pretrained:
        model = _create_pretrained(name, num_classes, in_chans, kwargs)
    else:
        model = _create(name, num_classes, in_chans, kwargs)
        if weights is not None:
            report = load_weights(model, weights, model_name=name)
    model.weights_report = report
    return model


def _create_timm_file(
    name: str, weights: Path, num_classes: int, in_chans: int, kwargs: dict
) -> nn.Module:
    try:
        return _create(
            name,
            num_classes,
            in_chans,
            kwargs,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(weights)),
        )
    except UsageError:
        raise
    except (RuntimeError, OSError, KeyError) as exc:
        raise BadInputError(
            f"{weights}: timm could not load it into {name}: {one_line(exc)} "
            "(set model.pretrained=false to use cellbench's lenient loader)"
        ) from exc


def _create_pretrained(name: str, num_classes: int, in_chans: int, kwargs: dict) -> nn.Module:
    if not _has_pretrained_source(name):
        raise UsageError(
            f"model {name}: timm knows no pretrained weights for it; "
            "use --weights FILE (a local .pth or .safetensors) or pretrained=false"
        )
    with offline_hub_if_unreachable() as online:
        try:
            return _create(name, num_classes, in_chans, kwargs, pretrained=True)
        except UsageError:
            raise
        except (OSError, RuntimeError, ConnectionError) as exc:
            if not online:
                raise BadInputError(
                    f"model {name}: pretrained weights not available offline (not in the local "
                    "cache); use --weights FILE with a local .pth/.safetensors, or run once "
                    "online to fill the cache"
                ) from exc
            raise BadInputError(
                f"model {name}: cannot download pretrained weights: {one_line(exc)}"
            ) from exc
