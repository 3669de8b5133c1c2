"""YAML as cellbench reads it: PyYAML's safe loader, refusing a key given twice.

A module of its own (not ``config``) so that the config and the workspace file, which reads
``cellbench.yaml`` and is itself read by the config, share it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cellbench.errors import BadInputError


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a mapping giving a key twice is an error (the YAML spec
    says keys are unique; PyYAML silently keeps the last one, hiding a typo'd profile)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: PyYAML's own error names it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file: UTF-8, no key twice; any problem is one line naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BadInputError(f"{path}: malformed YAML{where}: {problem}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. a date like 2020-13-45
        raise BadInputError(f"{path}: malformed YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data
