"""cellbench: a terminal workbench to train, check and retrain image models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The inference API lives in cellbench.inference (torch). It is exposed here lazily so that
# ``import cellbench`` (and the CLI, which imports it) stays torch-free and fast.
_LAZY = {
    "load_model": "cellbench.inference",
    "predict": "cellbench.inference",
    "predict_many": "cellbench.inference",
    "predict_slide": "cellbench.inference.slide",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from cellbench.inference import load_model, predict, predict_many  # noqa: F401
    from cellbench.inference.slide import predict_slide  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cellbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
