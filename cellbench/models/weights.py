"""Load weights into a model and say exactly what happened: the one lenient loader.

``model.weights: FILE`` (``load_weights``) and ``train --init-from RUN`` (``load_state``) follow
one rule: a classifier whose shape does not match (fine-tuning to another class count) is dropped
and left freshly initialised, and reported; any other shape mismatch is an error, never a silent
partial load.

Accepted files: ``.safetensors``; ``.pth``/``.pt``/``.bin`` read with
``torch.load(weights_only=True)`` holding a raw state_dict, a dict with
``model``/``state_dict``/``model_state_dict`` (a cellbench checkpoint has ``model``), with
``module.`` (DDP, timm's EMA wrapper) or ``_orig_mod.`` (torch.compile) prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cellbench.errors import BadInputError, one_line

NESTED_KEYS = ("model", "state_dict", "model_state_dict")
STRIP_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class WeightsReport:
    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_head: list[str] = field(default_factory=list)
    source: str = "file"  # "file" (cellbench loader) or "timm" (timm's pretrained loader)

    def messages(self) -> list[str]:
        """Human-readable lines, one per notable fact, for logs and ``warning`` events."""
        lines = [f"{self.path}: loaded {self.loaded} tensors"]
        if self.dropped_head:
            lines.append(
                f"{self.path}: classifier {', '.join(self.dropped_head)} has another class count; "
                "dropped and re-initialised"
            )
        if self.missing:
            lines.append(f"{self.path}: {len(self.missing)} missing keys: {_preview(self.missing)}")
        if self.unexpected:
            lines.append(
                f"{self.path}: {len(self.unexpected)} unexpected keys: {_preview(self.unexpected)}"
            )
        return lines


def _preview(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefixes (``module.``, ``_orig_mod.``) that every key carries.

    Only a prefix shared by all keys is a wrapper's; a submodule that happens to be called
    ``module`` keeps its name.
    """
    changed = True
    while state and changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def torch_load_error(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed.

    torch's refusal of pickled objects is a multi-line text with colour codes whose first line
    names no cause; the useful part is the global it refused.
    """
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if refused:
        return (
            f"holds pickled Python objects ({refused.group(1)}) that "
            "torch.load(weights_only=True) refuses"
        )
    return one_line(exc, limit=200)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a checkpoint dict if needed."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInputError(
                f"{path}: not a readable safetensors file ({one_line(exc)})"
            ) from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch errors all mean "not loadable safely"
            raise BadInputError(
                f"{path}: cannot read weights with torch.load(weights_only=True): "
                f"{torch_load_error(exc)} (save model.state_dict(), not the pickled model)"
            ) from exc
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise BadInputError(f"{path}: no state_dict found in the file")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(obj)[:8])
        raise BadInputError(f"{path}: no tensors found (top-level keys: {keys})")
    return strip_prefixes(tensors)


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (timm's ``get_classifier()``)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return set()
    for name, module in model.named_modules():
        if module is head:
            prefix = f"{name}." if name else ""
            return {f"{prefix}{k}" for k in head.state_dict()}
    return set()


def load_weights(model: nn.Module, path: str | Path, model_name: str = "model") -> WeightsReport:
    """Load the file ``path`` into ``model`` (in place); return what was loaded, dropped and
    missing."""
    return load_state(model, read_state_dict(path), str(path), model_name)


def load_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    model_name: str = "model",
    assign: bool = False,
) -> WeightsReport:
    """Load the tensors of ``state`` into ``model`` by the module's rule; ``source`` names where
    they come from in messages (a file, ``--init-from RUN``). ``assign``: the model takes the
    tensors themselves, cast to its dtypes (``load_state_dict(assign=True)``: a model built on
    the meta device)."""
    state = strip_prefixes(state)
    own = model.state_dict()
    head = classifier_keys(model)
    report = WeightsReport(path=source)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif value.shape != own[key].shape:
            if key in head:
                report.dropped_head.append(key)
            else:
                raise BadInputError(
                    f"{source}: '{key}' has shape {tuple(value.shape)} but {model_name} expects "
                    f"{tuple(own[key].shape)} (weights for another architecture or in_chans?)"
                )
        else:
            dtype = own[key].dtype
            usable[key] = value.to(dtype) if assign and value.dtype != dtype else value
    if not usable:
        raise BadInputError(
            f"{source}: none of its {len(state)} tensors match {model_name} "
            f"(first keys: {_preview(sorted(state), 3)})"
        )
    result = model.load_state_dict(usable, strict=False, assign=assign)
    dropped = set(report.dropped_head)
    report.missing = [k for k in result.missing_keys if k not in dropped]
    report.loaded = len(usable)
    return report
