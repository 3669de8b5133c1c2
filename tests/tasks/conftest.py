"""Fixtures the task tests share with the engine and data tests (a tiny shapes dataset and
training config; a generated nuclei store)."""

from tests.data.conftest import raw_master, store_master  # noqa: F401
from tests.engine.conftest import shapes_dir, tiny_config, tiny_overrides  # noqa: F401
