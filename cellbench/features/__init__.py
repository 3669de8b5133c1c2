"""Frozen-backbone features: extraction into a memory-mapped store, staleness and sanity checks.

``store`` (layout, ``open_feature_store``), ``extract`` (``features extract``), ``check``
(``features check``). Backbones themselves live in ``cellbench.models.backbones``.
"""
