"""Nested mappings as ``{dotted key: value}`` (``{"train": {"lr": 0.1}}`` -> ``{"train.lr":
0.1}``): how configs, workspace files and run comparisons name their keys."""

from __future__ import annotations

from typing import Any


def flatten(data: dict[str, Any], prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """Every leaf of ``data`` under its dotted key; ``keep_empty``: an empty mapping is kept as
    a value (``{}``) rather than vanishing."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and (value or not keep_empty):
            out.update(flatten(value, f"{dotted}.", keep_empty))
        else:
            out[dotted] = value
    return out
