"""Typed configuration, profiles and ``--set`` overrides.

Layering, lowest first: dataclass defaults < profile or ``--config`` file < ``--set a.b=value``.
A layer that gives a mapping (``model.args``, ``expect``, ``data.families``) replaces it whole;
``--set model.args.num_modules=6`` changes one entry of it.
The resolved config is saved with every run (``config.yaml``) and can be fed back with
``--config`` to re-run it exactly.

Errors name the source (file or ``--set``) and the key; an unknown key gets a did-you-mean.
Problems in a file exit 3, problems on the command line exit 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.atomic import atomic_write_text
from cellbench.errors import BadInputError, UsageError

PROFILES_DIR = Path(__file__).parent / "profiles"
TASKS = ("classify", "organ", "nuclei")


def _choices(*values: str | int) -> dict:
    return {"choices": values}


@dataclass
class DataConfig:
    path: str = "data/demo"
    # classification: one folder of class subfolders is split per class with this seed and ratios
    val_ratio: float = 0.15
    test_ratio: float = 0.15
    split_seed: int = 42
    # classification: keep only these classes, in this order (None: every class folder/label)
    classes: list[str] | None = None
    image_size: int = 64
    in_chans: int = 3
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int = 0
    max_samples: int | None = None  # cap per split, for smoke runs
    # Hugging Face datasets sources
    hf_image_key: str = "image"
    hf_label_key: str = "label"
    # augmentation
    augment: bool = True
    # train crop: "pad" = random crop after 1/16 padding (seeds/002), "resized" =
    # RandomResizedCrop (seeds/004), "none" = resize only
    train_crop: str = field(default="pad", metadata=_choices("pad", "resized", "none"))
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    color_jitter: float = 0.0
    randaugment: int = 0
    random_erasing: float = 0.0
    # nuclei / organ tasks: PanNuke protocol split (1..3) and organ family selection
    split: int = field(default=1, metadata=_choices(1, 2, 3))
    family: str | None = None
    families: dict[str, list[str]] | None = None  # None: the DESIGN.md defaults
    # organ task: a feature store (<store>/features/<tag>, from ``features extract``); a stale or
    # failed one is refused unless features_force (``train --force``)
    features: str | None = None
    features_force: bool = False


@dataclass
class ModelConfig:
    name: str = "simple_cnn"
    pretrained: bool = False
    weights: str | None = None  # local .pth / .safetensors
    num_classes: int | None = None  # None: taken from the data
    drop_rate: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)  # model-specific keyword arguments


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # None: off
    min_delta: float = 0.0
    monitor: str = "val_loss"
    # auto: min for losses, errors, MSE, ECE... (cellbench.runs.direction), else max
    mode: str = field(default="auto", metadata=_choices("auto", "min", "max"))


@dataclass
class LRFindConfig:
    """``train --lr-find``: exponential LR range test (see docs/training.md)."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    smoothing: float = 0.98  # beta of the bias-corrected EMA of the loss
    diverge: float = 4.0  # stop when the smoothed loss exceeds this many times its best


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.05
    seed: int = 42
    optimizer: str = "adamw"
    momentum: float = 0.9
    layer_decay: float | None = None
    scheduler: str = field(default="cosine", metadata=_choices("cosine", "step", "none"))
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    decay_epochs: int = 30  # step scheduler
    decay_rate: float = 0.1  # step scheduler
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))
    ema: bool = False
    ema_decay: float = 0.9998
    ema_warmup: bool = True  # timm's EMA decay warmup: the EMA leaves the initial weights early
    eval_ema: bool = False
    grad_clip: float | None = None
    # micro-batches per optimizer step (the effective batch is batch_size x this); an epoch's
    # last window steps with what it has
    grad_accum_steps: int = 1
    freeze_backbone_epochs: int = 0
    channels_last: bool = False
    compile: bool = False
    # auto: on for CPU, off for CUDA (faster kernels, cuDNN autotuning); true/false force it
    deterministic: bool | str = field(default="auto", metadata=_choices("auto", True, False))
    log_every: int = 10  # steps between ``step`` events
    limit_train_batches: int | None = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    device: str = "auto"


@dataclass
class ChecksConfig:
    """Thresholds of the named sanity checks."""

    initial_loss_tolerance: float = 0.25  # relative distance of the first loss from ln(C)
    no_decrease_epochs: int = 3
    train_val_gap: float = 0.5  # val_loss - train_loss, relative to val_loss
    input_min: float = -10.0
    input_max: float = 10.0
    cls_std_min: float = 0.4
    cls_std_max: float = 2.0
    gpu_memory_fraction: float = 0.92
    overfit_loss: float = 0.05  # --overfit-small passes below this loss
    overfit_max_steps: int = 500  # --overfit-small fails when the loss is still higher after this


@dataclass
class OrganConfig:
    """``--task organ``: a head on the CLS features of a feature store."""

    target: str = field(default="tissue", metadata=_choices("tissue", "family"))
    hidden: int = 0  # 0: a linear head; > 0: one hidden layer of this width (GELU, dropout)
    dropout: float = 0.0
    standardize: bool = True  # scale each feature by its train mean/std (stored in the head)


@dataclass
class Config:
    task: str = field(default="classify", metadata=_choices(*TASKS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    organ: OrganConfig = field(default_factory=OrganConfig)
    # metric -> [low, high]; a final metric outside its range emits a warning
    expect: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of the resolved config."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- type checking


class _ConfigValueError(Exception):
    """Internal: a key with a bad value; turned into a sourced error by the caller."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise ``_ConfigValueError``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, value, arg)
            except _ConfigValueError:
                continue
        raise _ConfigValueError(key, f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _ConfigValueError(key, f"{key}: expected a list, got {value!r}")
        if item_tp is str:
            # class names like 0, 1, 2 arrive from YAML as numbers: they are names here
            value = [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return [_check_value(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _ConfigValueError(key, f"{key}: expected a mapping, got {value!r}")
        return {
            _check_value(key, k, key_tp): _check_value(f"{key}.{k}", v, val_tp)
            for k, v in value.items()
        }
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and is_number and isinstance(value, int):
        return value
    if tp is float and is_number:
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept it where a float is expected
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, str):
        return value
    raise _ConfigValueError(key, f"{key}: expected {_type_name(tp)}, got {value!r}")


def _unknown_key(key: str, known: list[str]) -> _ConfigValueError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return _ConfigValueError(key, f"unknown key '{key}'{hint}")


def _merge(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Recursively set the dataclass ``obj`` from ``data``, checking keys and types."""
    if not isinstance(data, dict):
        key = prefix.rstrip(".") or "<root>"
        raise _ConfigValueError(key, f"{key}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key, list(fields))
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{key}.")
            continue
        checked = _check_value(key, value, hints[name])
        choices = fields[name].metadata.get("choices")
        if choices and checked not in choices:
            close = difflib.get_close_matches(str(checked), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listed = ", ".join(map(str, choices))
            raise _ConfigValueError(key, f"{key}: '{checked}' is not one of {listed}{hint}")
        setattr(obj, name, checked)


def _field_type(key: str) -> Any:
    """The annotated type of a dotted key, or raise an unknown-key error."""
    obj: Any = Config()
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj):
            # inside a free-form mapping (model.args, expect, families): any value goes
            return Any
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise _unknown_key(".".join(parts[: i + 1]), names)
        if i == len(parts) - 1:
            return typing.get_type_hints(type(obj))[part]
        obj = getattr(obj, part)
    return Any


# --------------------------------------------------------------------------- sources


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def find_profile(name_or_path: str) -> Path:
    """A profile by name (shipped with the package) or by path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if not candidate.is_file():
            raise UsageError(f"{candidate}: profile file not found")
        return candidate
    shipped = PROFILES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = list_profiles()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"unknown profile '{name_or_path}'{hint}; available: {', '.join(names)}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BadInputError(f"{path}: malformed YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> (key, typed value). The value is typed from the key's annotation."""
    if "=" not in text:
        raise UsageError(f"--set {text}: expected KEY=VALUE, e.g. --set train.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        tp = _field_type(key)
    except _ConfigValueError as exc:
        raise UsageError(f"--set {text}: {exc}") from exc
    if _is_text(tp):
        # keep text as typed ("001", "on", "1e-3" stay strings); null still means None
        value: Any = None if raw.strip() in ("null", "~") and tp is not str else raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UsageError(f"--set {text}: cannot parse value '{raw}'") from exc
    return key, value


def _is_text(tp: Any) -> bool:
    """str or ``str | None``."""
    if tp is str:
        return True
    args = typing.get_args(tp)
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and set(args) == {
        str,
        type(None),
    }


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _apply(config: Config, data: dict[str, Any], source: str, error: type[Exception]) -> None:
    try:
        _merge(config, data)
    except _ConfigValueError as exc:
        raise error(f"{source}: {exc}") from exc


def load_config(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Resolve a config: defaults < base (a saved run config) < profile/config file < --set."""
    config = Config()
    if base:
        _apply(config, base, "saved run config", BadInputError)
    for source in (profile, config_file):
        if source is None:
            continue
        path = find_profile(str(source)) if source is profile else Path(source)
        if source is config_file and not path.is_file():
            raise UsageError(f"{path}: config file not found")
        _apply(config, read_yaml(path), str(path), BadInputError)
    for text in overrides:
        key, value = parse_override(text)
        inside = _inside_mapping(config, key)
        if inside is not None:
            # --set model.args.M=6 changes one entry; --set model.args={...} replaces them all
            field_key, rest = inside
            key, value = field_key, _with_entry(_get(config, field_key), rest, value)
        _apply(config, _nest(key, value), f"--set {text}", UsageError)
    return config


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _inside_mapping(config: Config, key: str) -> tuple[str, list[str]] | None:
    """For a key below a free-form mapping field (``model.args.num_modules``): the field's key
    and the path inside it; None for an ordinary field (already checked by parse_override)."""
    node: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return ".".join(parts[:i]), parts[i:]
        node = getattr(node, part)
    return None


def _with_entry(mapping: dict | None, path: list[str], value: Any) -> dict:
    """A copy of ``mapping`` with ``path`` set to ``value``."""
    result = copy.deepcopy(mapping) if isinstance(mapping, dict) else {}
    node = result
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return result


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    config = Config()
    _apply(config, data, source, BadInputError)
    return config
