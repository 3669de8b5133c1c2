"""Tasks the training loop can run; ``get_task(config.task)`` picks one."""

from __future__ import annotations

from cellbench.engine.tasks.base import MetricAccumulator, Task, TaskData
from cellbench.errors import UsageError

__all__ = ["MetricAccumulator", "Task", "TaskData", "get_task"]


def get_task(name: str) -> Task:
    if name == "classify":
        from cellbench.engine.tasks.classify import ClassificationTask

        return ClassificationTask()
    if name == "organ":
        from cellbench.engine.tasks.organ import OrganTask

        return OrganTask()
    raise UsageError(
        f"--task {name}: training is available for 'classify' and 'organ' in this version"
    )
