"""Parameter groups for frozen-backbone epochs and parameter counts (used by the engine).

The head is timm's ``get_classifier()``, which both built-ins and every timm model implement, so
"freeze the backbone" means the same thing for all of them.
"""

from __future__ import annotations

from torch import nn


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = model.get_classifier()
    return list(head.parameters()) if isinstance(head, nn.Module) else []


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    head_ids = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head_ids]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> int:
    """Freeze (False) or unfreeze (True) everything except the classifier; returns how many
    parameter values (elements) changed state, for the log line."""
    count = 0
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)
        count += p.numel()
    return count


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
