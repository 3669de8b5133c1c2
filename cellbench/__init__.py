"""cellbench: a terminal workbench to train, check and retrain image models."""

__version__ = "0.1.0"
