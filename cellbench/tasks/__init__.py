"""Tasks the training loop can run, found through a registry (timm's ``register_model`` style).

A task module decorates its class with ``@register_task("name")``; ``get_task(config.task)``
imports the built-in task modules on first use (so ``cellbench --help`` imports none of them) and
returns a new instance. An unknown name is refused with a did-you-mean.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from cellbench.errors import UsageError
from cellbench.tasks.base import LossSums, MetricAccumulator, Task, TaskData

__all__ = [
    "LossSums",
    "MetricAccumulator",
    "Task",
    "TaskData",
    "get_task",
    "register_task",
    "task_names",
]

# modules that register the shipped tasks when imported
_BUILTIN_MODULES = (
    "cellbench.tasks.classify.task",
    "cellbench.tasks.nuclei.task",
    "cellbench.tasks.organ.task",
)
_REGISTRY: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def decorate(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task '{name}' is registered twice ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def task_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"--task {name}: no such task{hint}; tasks: {', '.join(task_names())}")
    return cls()
