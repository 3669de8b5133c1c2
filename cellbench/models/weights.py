"""Load a local weights file into a model and say exactly what happened.

Accepted: ``.safetensors``; ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``
holding a raw state_dict, a dict with ``model``/``state_dict``/``model_state_dict`` (a cellbench
checkpoint has ``model``), with ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefixes.
A classifier whose shape does not match (fine-tuning to another class count) is dropped and
left freshly initialised; any other shape mismatch is an error, never a silent partial load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cellbench.errors import BadInputError

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


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in STRIP_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


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
            raise BadInputError(f"{path}: not a readable safetensors file ({exc})") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch errors all mean "not loadable safely"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(
                f"{path}: cannot read weights with torch.load(weights_only=True): {first[:200]} "
                "(save model.state_dict(), not the pickled model)"
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
    return _strip_prefixes(tensors)


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
    """Load ``path`` into ``model`` (in place); return what was loaded, dropped and missing."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = classifier_keys(model)
    report = WeightsReport(path=str(path))
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif value.shape != own[key].shape:
            if key in head:
                report.dropped_head.append(key)
            else:
                raise BadInputError(
                    f"{path}: '{key}' has shape {tuple(value.shape)} but {model_name} expects "
                    f"{tuple(own[key].shape)} (weights for another architecture or in_chans?)"
                )
        else:
            usable[key] = value
    if not usable:
        raise BadInputError(
            f"{path}: none of its {len(state)} tensors match {model_name} "
            f"(first keys: {_preview(sorted(state), 3)})"
        )
    result = model.load_state_dict(usable, strict=False)
    dropped = set(report.dropped_head)
    report.missing = [k for k in result.missing_keys if k not in dropped]
    report.loaded = len(usable)
    return report
