"""What ``eval`` and ``predict`` read of a run before any torch work: its saved config, and
whether its feature store or data changed since it trained (``cellbench.runs.inputs``)."""

from __future__ import annotations

from cellbench.cli.common import warn
from cellbench.runs.layout import RunPaths


def run_config(paths: RunPaths) -> dict:
    """The run's config.yaml as a dict ({} when unreadable), without torch."""
    import yaml

    try:
        config = yaml.safe_load(paths.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def run_task(paths: RunPaths) -> str:
    """The run's task from its config.yaml (classification when it names none)."""
    task = run_config(paths).get("task")
    return task if isinstance(task, str) else "classify"


def check_inputs(paths: RunPaths, force: bool, action: str) -> list[str]:
    """Refuse (exit 3) a run whose feature store or data changed since it trained, unless
    ``force``: then warn and return the differences (``cellbench.runs.inputs``). ``predict``
    looks at the feature store only: the training data does not change a prediction."""
    from cellbench.runs import inputs

    kinds = ("features",) if action == "predict" else inputs.KINDS
    changes = inputs.check(paths.root, run_config(paths), force, action, kinds)
    if changes:
        warn(f"--force: {paths.root.name}'s inputs changed since it trained: {'; '.join(changes)}")
        inputs.note_forced(paths.root, f"{action} --force", changes)
    return changes
