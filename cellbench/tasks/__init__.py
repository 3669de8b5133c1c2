"""Tasks, found through a registry (timm's ``register_model`` style), also from other packages.

A task module decorates its ``Task`` subclass with ``@register_task("name")``. The shipped tasks
are named here with the module that registers each, and other packages add theirs through the
entry-point group ``cellbench.tasks`` (``name = "package.module:TaskClass"``, or a module that
registers on import). ``task_names()`` lists both without importing any of them, so the config
can check ``task:`` and ``cellbench --help`` stays torch-free; ``get_task(name)`` imports the one
task asked for and returns a new instance. An unknown name is refused with a did-you-mean.

This module imports nothing heavy (no torch, not ``base``): the config checks task names with it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING

from cellbench.errors import UsageError

if TYPE_CHECKING:
    from cellbench.tasks.base import Task

__all__ = ["ENTRY_POINT_GROUP", "get_task", "register_task", "task_class", "task_names"]

ENTRY_POINT_GROUP = "cellbench.tasks"
# the shipped tasks: name -> the module whose import registers it
_BUILTIN = {
    "classify": "cellbench.tasks.classify.task",
    "nuclei": "cellbench.tasks.nuclei.task",
    "organ": "cellbench.tasks.organ.task",
}
_REGISTRY: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def decorate(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task '{name}' is registered twice ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """The ``cellbench.tasks`` entry points of the installed packages (a shipped name wins)."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> list[str]:
    """Every task that ``get_task`` can give: shipped, registered, and from entry points."""
    return sorted({*_BUILTIN, *_REGISTRY, *_entry_points()})


def _load(name: str) -> None:
    if name in _REGISTRY:
        return
    if name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
        return
    ep = _entry_points().get(name)
    if ep is None:
        return
    try:
        loaded = ep.load()
    except Exception as exc:  # a broken plugin is named, never a traceback
        raise UsageError(f"task '{name}': entry point {ep.value} cannot be loaded ({exc})") from exc
    if isinstance(loaded, type) and name not in _REGISTRY:
        register_task(name)(loaded)  # a class named by the entry point, not decorated
    if name not in _REGISTRY:
        raise UsageError(f"task '{name}': entry point {ep.value} registers no task of that name")


def task_class(name: str) -> type[Task]:
    _load(name)
    cls = _REGISTRY.get(name)
    if cls is None:
        names = task_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"--task {name}: no such task{hint}; tasks: {', '.join(names)}")
    return cls


def get_task(name: str) -> Task:
    """A new instance of the task called ``name``."""
    return task_class(name)()
