"""The task registry."""

from __future__ import annotations

import pytest

from cellbench.errors import UsageError
from cellbench.tasks import get_task, register_task, task_names
from cellbench.tasks.base import Task


def test_registered_tasks_are_found_by_name():
    assert "classify" in task_names()
    assert get_task("classify").name == "classify"


def test_an_unknown_task_gets_a_did_you_mean():
    with pytest.raises(UsageError, match="did you mean 'classify'"):
        get_task("clasify")


def test_a_name_cannot_be_registered_by_two_classes():
    @register_task("test-only-task")
    class First(Task):
        pass

    assert isinstance(get_task("test-only-task"), First)
    with pytest.raises(ValueError, match="twice"):

        @register_task("test-only-task")
        class Second(Task):
            pass
