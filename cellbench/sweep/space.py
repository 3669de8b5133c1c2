"""Search spaces: which values each config key takes, and every combination of them.

A space maps a config key to its values. In a sweep file a key takes
- a list: ``train.lr: [1e-3, 3e-3]``;
- a linear range: ``train.batch_size: {range: [16, 64, 16]}`` (start, stop, step; stop included
  when the steps land on it);
- a log range: ``train.lr: {log: [1e-4, 1e-2], num: 3}`` (``num`` values evenly spaced in log);
- for ``model``, a choice of models: names, or mappings of ``model.*`` keys
  (``{name: inception_multibranch, args: {num_modules: 4}}``; ``args`` replaces the profile's
  model arguments whole, since another model takes other arguments).
On the command line, ``--grid train.lr=1e-3,3e-3`` gives a list (commas inside ``[...]`` or
``{...}`` belong to the value: ``--grid model.args.channels=[8,16],[16,32]``).

Every value is checked against the config's types now (``cellbench.config.parse_override``), so a
typo fails the sweep before any trial starts, with the key and a did-you-mean.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import yaml

from cellbench.config import load_config
from cellbench.errors import UsageError

Params = dict[str, Any]


def split_values(text: str) -> list[str]:
    """``a,b,[1,2]`` -> ``["a", "b", "[1,2]"]``: commas at bracket depth 0 separate values."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """``--grid train.lr=1e-3,3e-3`` -> ``("train.lr", [0.001, 0.003])``, typed and checked."""
    if "=" not in text:
        raise UsageError(f"--grid {text}: expected KEY=V1,V2,... e.g. --grid train.lr=1e-3,3e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    values = [v for v in split_values(raw)]
    if not raw.strip() or any(v == "" for v in values):
        raise UsageError(f"--grid {text}: an empty value; give V1,V2,...")
    try:
        typed = [typed_value(key, v) for v in values]
    except UsageError as exc:
        problem = str(exc).split(": ", 1)[-1]  # drop the "--set k=v" prefix: name the --grid
        raise UsageError(f"--grid {text}: {problem}") from exc
    return key, _distinct(key, typed, f"--grid {text}")


def typed_value(key: str, text: str) -> Any:
    """The value ``--set key=text`` gives the config, as the config holds it (``3e-3`` is the
    float 0.003 there, though YAML alone reads it as text): resolved through the config loader,
    which also checks the key (did-you-mean) and the type."""
    config = load_config(overrides=[f"{key}={text}"])
    node: Any = config
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return copy.deepcopy(node)


def expand_values(key: str, spec: Any, source: str) -> list[Any]:
    """The values of one space entry of a sweep file (see the module doc)."""
    if isinstance(spec, dict) and key != "model":
        values = _range_values(key, spec, source)
        # distinct by construction, and an interval: its two ends checked are all checked
        # (checking each of a million values would take minutes)
        first, last = _checked(key, values[0], source), _checked(key, values[-1], source)
        kind = type(first) if type(first) is type(last) and type(first) in (int, float) else None
        return [kind(v) for v in values] if kind else values
    elif isinstance(spec, list):
        values = spec
    else:
        values = [spec]
    if not values:
        raise UsageError(f"{source}: space.{key} has no values")
    if key == "model":
        return _distinct(key, [_model_choice(v, source) for v in values], source)
    checked = [_checked(key, v, source) for v in values]
    return _distinct(key, checked, source)


def _range_values(key: str, spec: dict, source: str) -> list[float]:
    bounds = spec.get("range") if set(spec) == {"range"} else spec.get("log")
    if isinstance(bounds, list) and not all(_finite(x) for x in bounds):
        # inf or NaN ends give NaN values: refuse the bound as written, not a value made of it
        raise UsageError(f"{source}: space.{key}: {bounds!r}: the ends must be finite numbers")
    if set(spec) == {"range"} and isinstance(spec["range"], list) and len(spec["range"]) == 3:
        start, stop, step = (float(x) for x in spec["range"])
        if step <= 0 or stop < start:
            raise UsageError(f"{source}: space.{key}.range needs start <= stop and step > 0")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        _check_count(key, count, source)
        values = [start + i * step for i in range(count)]
        if all(float(x).is_integer() for x in spec["range"]):
            return [int(v) for v in values]
        return [round(v, 12) for v in values]
    if set(spec) == {"log", "num"} and isinstance(spec["log"], list) and len(spec["log"]) == 2:
        low, high = (float(x) for x in spec["log"])
        num = int(spec["num"])
        if low <= 0 or high <= low or num < 1:
            raise UsageError(f"{source}: space.{key}.log needs 0 < low < high and num >= 1")
        _check_count(key, num, source)
        if num == 1:
            return [low]
        ratio = math.log(high / low) / (num - 1)
        # 3 significant digits: 1e-4, 3.16e-4, 1e-3 read better in run names than 15 digits
        return [float(f"{low * math.exp(i * ratio):.3g}") for i in range(num)]
    raise UsageError(
        f"{source}: space.{key}: expected a list, {{range: [start, stop, step]}} or "
        f"{{log: [low, high], num: N}}, got {spec!r}"
    )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: the range's own checks say what is wrong


MAX_KEY_VALUES = 100_000  # one key's values; the trial limit (sweep.limits) comes after


def _check_count(key: str, count: int, source: str) -> None:
    """A range is counted before it is built: 10⁹ values are refused, not allocated."""
    if count > MAX_KEY_VALUES:
        raise UsageError(
            f"{source}: space.{key} gives {count:,} values (at most {MAX_KEY_VALUES:,} per key)"
        )


def _checked(key: str, value: Any, source: str) -> Any:
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    text = text.removesuffix("\n...").strip()
    try:
        return typed_value(key, text)
    except UsageError as exc:
        raise UsageError(f"{source}: space: {exc}") from exc


def _model_choice(value: Any, source: str) -> Params:
    """A model choice as ``model.*`` keys: ``"resnet18"`` -> ``{"model.name": "resnet18"}``."""
    if isinstance(value, str):
        return {"model.name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise UsageError(f"{source}: space.model: a choice is a model name or a mapping with name")
    choice = {f"model.{k}": _checked(f"model.{k}", v, source) for k, v in value.items()}
    choice.setdefault("model.args", {})
    return choice


def _distinct(key: str, values: list[Any], source: str) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v in seen:
            raise UsageError(f"{source}: {key} lists {v!r} twice")
        seen.append(v)
    return seen


def grid(space: dict[str, list[Any]]) -> list[Params]:
    """Every combination, the first key varying slowest (the order a table of results reads)."""
    keys = list(space)
    combos = []
    for values in itertools.product(*(space[k] for k in keys)):
        params: Params = {}
        for key, value in zip(keys, values, strict=True):
            if key == "model":
                params.update(value)
            else:
                params[key] = value
        combos.append(params)
    return combos


def model_choices(space: dict[str, list[Any]]) -> list[Params]:
    """One params set per model choice (the smoke phase), or the profile's model alone."""
    return list(space.get("model") or [{}])


def to_sets(params: Params) -> list[str]:
    """Params as ``--set key=value`` texts that ``cellbench train`` reads back to the same
    values (YAML flow style: lists and mappings stay one token)."""
    sets = []
    for key, value in params.items():
        if isinstance(value, str):
            text = value
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
            text = text.removesuffix("\n...").strip()
        sets.append(f"{key}={text}")
    return sets
