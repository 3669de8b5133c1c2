"""Typed configuration, profiles and ``--set`` overrides.

Layering, lowest first: dataclass defaults < profile or ``--config`` file < ``--set a.b=value``.
A layer that gives a mapping (``model.args``, ``expect``, ``data.families``) replaces it whole;
``--set model.args.num_modules=6`` changes one entry of it.
The resolved config is saved with every run (``config.yaml``) and can be fed back with
``--config`` to re-run it exactly.

Errors name the source (file or ``--set``) and the key; an unknown key gets a did-you-mean.
Problems in a file exit 3, problems on the command line exit 2.

Every value is checked when its layer is applied, not when a training reaches it: its type, its
choices, its range (``train.epochs >= 1``, ``data.val_ratio`` in [0, 1), a finite ``train.lr > 0``,
...; the ``bounds`` metadata of each field) and the rules that tie fields together
(``val_ratio + test_ratio < 1``, one ``mean``/``std`` per input channel, ``low <= high``). A YAML
file must be UTF-8 and may not give a key twice.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.atomic import atomic_write_text
from cellbench.errors import BadInputError, UsageError
from cellbench.yamlio import UniqueKeyLoader, read_yaml  # noqa: F401  (re-exported)

PROFILES_DIR = Path(__file__).parent / "profiles"


def _choices(*values: str | int) -> dict:
    return {"choices": values}


def _task_names() -> list[str]:
    """The registry's tasks (shipped and from entry points), asked when ``task`` is set: the
    list is not written here, so a task added by a package is a valid ``task:``."""
    from cellbench.tasks import task_names  # torch-free: names only, no task is imported

    return task_names()


@dataclass(frozen=True)
class Bounds:
    """The range a number must lie in: finite, ``low`` <= (or <) value <= (or <) ``high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def accepts(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None:
            return value < self.high if self.high_open else value <= self.high
        return True

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def _bounds(low=None, high=None, low_open=False, high_open=False, **more) -> dict:
    return {"bounds": Bounds(low, high, low_open, high_open), **more}


AT_LEAST_1 = _bounds(1)
AT_LEAST_0 = _bounds(0)
POSITIVE = _bounds(0, low_open=True)
PROBABILITY = _bounds(0, 1)
RATIO = _bounds(0, 1, high_open=True)  # a share of something that must leave a remainder


@dataclass
class DataConfig:
    path: str = "data/demo"
    # classification: one folder of class subfolders is split per class with this seed and ratios
    val_ratio: float = field(default=0.15, metadata=RATIO)
    test_ratio: float = field(default=0.15, metadata=RATIO)
    split_seed: int = 42
    # classification: keep only these classes, in this order (None: every class folder/label)
    classes: list[str] | None = None
    image_size: int = field(default=64, metadata=AT_LEAST_1)
    in_chans: int = field(default=3, metadata=AT_LEAST_1)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int = field(default=0, metadata=AT_LEAST_0)
    # cap per split, for smoke runs
    max_samples: int | None = field(default=None, metadata=AT_LEAST_1)
    # Hugging Face datasets sources
    hf_image_key: str = "image"
    hf_label_key: str = "label"
    # augmentation
    augment: bool = True
    # train crop: "pad" = random crop after 1/16 padding (seeds/002), "resized" =
    # RandomResizedCrop (seeds/004), "none" = resize only
    train_crop: str = field(default="pad", metadata=_choices("pad", "resized", "none"))
    hflip: float = field(default=0.5, metadata=PROBABILITY)
    vflip: float = field(default=0.0, metadata=PROBABILITY)
    rot90: bool = False
    color_jitter: float = field(default=0.0, metadata=AT_LEAST_0)
    randaugment: int = field(default=0, metadata=AT_LEAST_0)
    random_erasing: float = field(default=0.0, metadata=PROBABILITY)
    # nuclei / organ tasks: PanNuke protocol split (1..3) and organ family selection
    split: int = field(default=1, metadata=_choices(1, 2, 3))
    family: str | None = None
    families: dict[str, list[str]] | None = None  # None: the DESIGN.md defaults
    # organ / nuclei tasks: a feature store (<store>/features/<tag>, from ``features extract``;
    # the canonical store it describes is read from its manifest); a stale or failed one is
    # refused unless features_force (``train --force``)
    features: str | None = None
    features_force: bool = False
    # µm per pixel of the training images (PanNuke, 40x: about 0.25): ``predict`` reads slides
    # at this resolution, rescaling those scanned at another
    mpp: float = field(default=0.25, metadata=POSITIVE)


@dataclass
class ModelConfig:
    name: str = "simple_cnn"
    pretrained: bool = False
    weights: str | None = None  # local .pth / .safetensors
    num_classes: int | None = field(default=None, metadata=AT_LEAST_1)  # None: taken from the data
    drop_rate: float = field(default=0.0, metadata=RATIO)
    args: dict[str, Any] = field(default_factory=dict)  # model-specific keyword arguments


@dataclass
class EarlyStoppingConfig:
    patience: int | None = field(default=None, metadata=AT_LEAST_0)  # None: off
    min_delta: float = field(default=0.0, metadata=AT_LEAST_0)
    monitor: str = "val_loss"
    # auto: min for losses, errors, MSE, ECE... (cellbench.runs.direction), else max
    mode: str = field(default="auto", metadata=_choices("auto", "min", "max"))


@dataclass
class LRFindConfig:
    """``train --lr-find``: exponential LR range test (see docs/training.md)."""

    start_lr: float = field(default=1e-7, metadata=POSITIVE)
    end_lr: float = field(default=10.0, metadata=POSITIVE)
    steps: int = field(default=100, metadata=_bounds(2))
    # beta of the bias-corrected EMA of the loss
    smoothing: float = field(default=0.98, metadata=RATIO)
    # stop when the smoothed loss exceeds this many times its best
    diverge: float = field(default=4.0, metadata=_bounds(1, low_open=True))


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata=AT_LEAST_1)
    # >= 0, not > 0: lr 0 is a legitimate control (a model that must not learn; tests use it)
    lr: float = field(default=1e-3, metadata=AT_LEAST_0)
    batch_size: int = field(default=32, metadata=AT_LEAST_1)
    weight_decay: float = field(default=0.05, metadata=AT_LEAST_0)
    seed: int = 42
    optimizer: str = "adamw"
    momentum: float = field(default=0.9, metadata=PROBABILITY)
    layer_decay: float | None = field(default=None, metadata=_bounds(0, 1, low_open=True))
    scheduler: str = field(default="cosine", metadata=_choices("cosine", "step", "none"))
    warmup_epochs: int = field(default=0, metadata=AT_LEAST_0)
    warmup_lr: float = field(default=1e-6, metadata=AT_LEAST_0)
    min_lr: float = field(default=1e-6, metadata=AT_LEAST_0)
    decay_epochs: int = field(default=30, metadata=AT_LEAST_1)  # step scheduler
    decay_rate: float = field(default=0.1, metadata=POSITIVE)  # step scheduler
    label_smoothing: float = field(default=0.0, metadata=RATIO)
    mixup: float = field(default=0.0, metadata=AT_LEAST_0)
    cutmix: float = field(default=0.0, metadata=AT_LEAST_0)
    mixup_prob: float = field(default=1.0, metadata=PROBABILITY)
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))
    ema: bool = False
    ema_decay: float = field(default=0.9998, metadata=RATIO)
    ema_warmup: bool = True  # timm's EMA decay warmup: the EMA leaves the initial weights early
    eval_ema: bool = False
    grad_clip: float | None = field(default=None, metadata=POSITIVE)
    # micro-batches per optimizer step (the effective batch is batch_size x this); an epoch's
    # last window steps with what it has
    grad_accum_steps: int = field(default=1, metadata=AT_LEAST_1)
    freeze_backbone_epochs: int = field(default=0, metadata=AT_LEAST_0)
    # several processes (--nproc, torchrun): BatchNorm statistics over the global batch
    sync_bn: bool = False
    # the memory guard: a warning when the first steps' peak CUDA memory passes this fraction of
    # the device's total (0 turns it off); machine profiles set it
    memory_guard: float = field(default=0.9, metadata=PROBABILITY)
    # the machine profile (profiles/machines/NAME.yaml) this config was fitted to, if any
    machine: str | None = None
    channels_last: bool = False
    compile: bool = False
    # auto: on for CPU, off for CUDA (faster kernels, cuDNN autotuning); true/false force it
    deterministic: bool | str = field(default="auto", metadata=_choices("auto", True, False))
    log_every: int = field(default=10, metadata=AT_LEAST_1)  # steps between ``step`` events
    # write every history column and the config (hparams) to <run>/tensorboard/ per epoch
    tensorboard: bool = False
    limit_train_batches: int | None = field(default=None, metadata=AT_LEAST_1)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    device: str = "auto"


@dataclass
class ChecksConfig:
    """Thresholds of the named sanity checks."""

    # relative distance of the first loss from ln(C)
    initial_loss_tolerance: float = field(default=0.25, metadata=AT_LEAST_0)
    no_decrease_epochs: int = field(default=3, metadata=AT_LEAST_1)
    # val_loss - train_loss, relative to val_loss
    train_val_gap: float = field(default=0.5, metadata=AT_LEAST_0)
    input_min: float = field(default=-10.0, metadata=_bounds())
    input_max: float = field(default=10.0, metadata=_bounds())
    cls_std_min: float = field(default=0.4, metadata=AT_LEAST_0)
    cls_std_max: float = field(default=2.0, metadata=POSITIVE)
    gpu_memory_fraction: float = field(default=0.92, metadata=_bounds(0, 1, low_open=True))
    # --overfit-small passes below this loss
    overfit_loss: float = field(default=0.05, metadata=POSITIVE)
    # --overfit-small fails when the loss is still higher after this
    overfit_max_steps: int = field(default=500, metadata=AT_LEAST_1)


@dataclass
class OrganConfig:
    """``--task organ``: a head on the CLS features of a feature store."""

    target: str = field(default="tissue", metadata=_choices("tissue", "family"))
    # 0: a linear head; > 0: one hidden layer of this width (GELU, dropout)
    hidden: int = field(default=0, metadata=AT_LEAST_0)
    dropout: float = field(default=0.0, metadata=RATIO)
    standardize: bool = True  # scale each feature by its train mean/std (stored in the head)


@dataclass
class NucleiLossConfig:
    """Weights of the nuclei decoder's loss terms (``cellbench.tasks.nuclei.losses``); 0 = off.
    Defaults: HoVer-Net's (every term 1); focal Tversky is CellViT's NP alternative."""

    np_ce: float = field(default=1.0, metadata=AT_LEAST_0)
    np_dice: float = field(default=1.0, metadata=AT_LEAST_0)
    # the background channel's Dice: with np_dice, HoVer-Net's NP Dice (a sum over both channels)
    np_dice_background: float = field(default=0.0, metadata=AT_LEAST_0)
    np_focal_tversky: float = field(default=0.0, metadata=AT_LEAST_0)
    hv_mse: float = field(default=1.0, metadata=AT_LEAST_0)
    hv_msge: float = field(default=1.0, metadata=AT_LEAST_0)
    nt_ce: float = field(default=1.0, metadata=AT_LEAST_0)
    nt_dice: float = field(default=1.0, metadata=AT_LEAST_0)


@dataclass
class NucleiConfig:
    """Task ``nuclei``: a CellViT-style decoder per organ family (docs/nuclei.md)."""

    # run the frozen backbone on the fly instead of reading the store (image augmentations apply)
    online_features: bool = False
    backbone: str | None = None  # --online-features: backbone profile or timm name
    backbone_weights: str | None = None
    # --online-features: 1-based blocks (None: depth/4 steps)
    blocks: list[int] | None = field(default=None, metadata=AT_LEAST_1)
    # decoder: channels of the L upsampling stages (CellViT: 512, 256, 128, 64) and of the
    # full-resolution image stem (CellViT: 32, 64); dropout is model.drop_rate
    widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64], metadata=AT_LEAST_1)
    stem: list[int] = field(default_factory=lambda: [32, 64], metadata=AT_LEAST_1)
    hv_activation: str = field(default="linear", metadata=_choices("linear", "tanh"))
    # conv blocks of the first stage after the bottleneck: CellViT's decoder3_upsampler has 3,
    # its other stages 2 (2 keeps checkpoints of earlier runs loadable)
    first_stage_blocks: int = field(default=2, metadata=_choices(2, 3))
    loss: NucleiLossConfig = field(default_factory=NucleiLossConfig)


@dataclass
class EvalConfig:
    """Evaluation during and after training."""

    # nuclei: bPQ of the val fold (post-processing + matching) every this many epochs; 0 = never
    pq_every: int = field(default=5, metadata=AT_LEAST_0)


@dataclass
class Config:
    task: str = field(default="classify", metadata={"choices": _task_names})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    nuclei: NucleiConfig = field(default_factory=NucleiConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
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

    def __init__(self, key: str, message: str, also: tuple[str, ...] = ()):
        super().__init__(message)
        self.key = key
        self.keys = (key, *also)  # every key the problem involves (a rule ties several)


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


def _merge(obj: Any, data: dict[str, Any], prefix: str = "", set_keys: list | None = None) -> None:
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
            _merge(current, value, prefix=f"{key}.", set_keys=set_keys)
            continue
        checked = _check_value(key, value, hints[name])
        _check_bounds(key, checked, fields[name].metadata.get("bounds"))
        choices = fields[name].metadata.get("choices")
        if callable(choices):
            choices = choices()
        if choices and checked not in choices:
            close = difflib.get_close_matches(str(checked), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listed = ", ".join(map(str, choices))
            raise _ConfigValueError(key, f"{key}: '{checked}' is not one of {listed}{hint}")
        setattr(obj, name, checked)
        if set_keys is not None:
            set_keys.append(key)


def _check_bounds(key: str, value: Any, bounds: Bounds | None) -> None:
    if bounds is None or value is None or isinstance(value, bool):
        return
    if isinstance(value, list):  # a list field's bounds hold for each of its items
        for i, item in enumerate(value):
            _check_bounds(f"{key}[{i}]", item, bounds)
        return
    if isinstance(value, int | float) and not bounds.accepts(value):
        raise _ConfigValueError(key, f"{key}: {value!r} must be {bounds.describe()}")


def _rule_problems(config: Config) -> _ConfigValueError | None:
    """The rules that tie fields together, checked once every layer is applied (an earlier
    ``--set data.in_chans=1`` may be followed by the ``--set data.mean=[0.5]`` that fits it)."""
    d = config.data
    if d.val_ratio + d.test_ratio >= 1:
        return _ConfigValueError(
            "data.val_ratio",
            f"data.val_ratio + data.test_ratio = {d.val_ratio + d.test_ratio:g} "
            "leaves no training data (must be < 1)",
            also=("data.test_ratio",),
        )
    for name in ("mean", "std"):
        values = getattr(d, name)
        if len(values) != d.in_chans:
            return _ConfigValueError(
                f"data.{name}",
                f"data.{name}: {len(values)} values for data.in_chans = {d.in_chans} channels",
                also=("data.in_chans",),
            )
        if not all(math.isfinite(v) for v in values) or (name == "std" and min(values) <= 0):
            return _ConfigValueError(
                f"data.{name}", f"data.{name}: {values} must be finite (std > 0)"
            )
    pairs = (
        ("train.lr_find.start_lr", "train.lr_find.end_lr"),
        ("checks.input_min", "checks.input_max"),
        ("checks.cls_std_min", "checks.cls_std_max"),
    )
    for low_key, high_key in pairs:
        low, high = _get(config, low_key), _get(config, high_key)
        if low >= high:
            return _ConfigValueError(
                high_key, f"{low_key} = {low:g} must be < {high_key} = {high:g}"
            )
    for metric, bounds in config.expect.items():
        ok = len(bounds) == 2 and all(map(math.isfinite, bounds)) and bounds[0] <= bounds[1]
        if not ok:
            return _ConfigValueError(
                f"expect.{metric}", f"expect.{metric}: expected [low, high] with low <= high"
            )
    return None


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


def profile_dirs() -> list[Path]:
    """Where a profile name is looked up, first first: the workspace's ``paths.profiles`` (your
    profiles, over the shipped ones), then the shipped ``cellbench/profiles``."""
    from cellbench.workspace import current

    ws = current()
    dirs = [ws.folder("profiles")] if ws is not None else []
    return [d for d in dirs if d.is_dir() and d.resolve() != PROFILES_DIR.resolve()] + [
        PROFILES_DIR
    ]


def list_profiles() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})


def find_profile(name_or_path: str) -> Path:
    """A profile by name (the workspace's, then shipped with the package) or by path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if not candidate.is_file():
            raise UsageError(f"{candidate}: profile file not found")
        return candidate
    for folder in profile_dirs():
        found = folder / f"{name_or_path}.yaml"
        if found.is_file():
            return found
    names = list_profiles()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"unknown profile '{name_or_path}'{hint}; available: {', '.join(names)}")


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


Origins = dict[str, tuple[str, type[Exception]]]  # key -> the last layer that set it


def _apply(
    config: Config,
    data: dict[str, Any],
    source: str,
    error: type[Exception],
    origins: Origins | None = None,
) -> None:
    set_keys: list[str] = []
    try:
        _merge(config, data, set_keys=set_keys)
    except _ConfigValueError as exc:
        raise error(f"{source}: {exc}") from exc
    if origins is not None:
        for key in set_keys:
            origins.pop(key, None)  # re-inserted last: dict order is the order layers set keys
            origins[key] = (source, error)


def _check_rules(config: Config, origins: Origins) -> None:
    """Raise for a broken rule, naming the last layer that set one of the keys it involves."""
    problem = _rule_problems(config)
    if problem is None:
        return
    # a mapping field (expect) is set whole: "expect" is the origin of "expect.val_accuracy"
    involved = [
        origins[k] for k in origins if any(p == k or p.startswith(f"{k}.") for p in problem.keys)
    ]
    source, error = involved[-1] if involved else ("config", BadInputError)
    raise error(f"{source}: {problem}")


def load_config(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    machine: dict[str, Any] | None = None,
    machine_source: str = "machine profile",
) -> Config:
    """Resolve a config: defaults < base (a saved run config) < machine (a machine profile's
    keys, ``cellbench.machines``) < profile/config file < --set."""
    config = Config()
    origins: Origins = {}
    if base:
        _apply(config, base, "saved run config", BadInputError, origins)
    if machine:
        _apply(config, machine, machine_source, BadInputError, origins)
    for source in (profile, config_file):
        if source is None:
            continue
        path = find_profile(str(source)) if source is profile else Path(source)
        if source is config_file and not path.is_file():
            raise UsageError(f"{path}: config file not found")
        _apply(config, read_yaml(path), str(path), BadInputError, origins)
    for text in overrides:
        key, value = parse_override(text)
        inside = _inside_mapping(config, key)
        if inside is not None:
            # --set model.args.M=6 changes one entry; --set model.args={...} replaces them all
            field_key, rest = inside
            key, value = field_key, _with_entry(_get(config, field_key), rest, value)
        _apply(config, _nest(key, value), f"--set {text}", UsageError, origins)
    _check_rules(config, origins)
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
    origins: Origins = {}
    _apply(config, data, source, BadInputError, origins)
    _check_rules(config, origins)
    return config
