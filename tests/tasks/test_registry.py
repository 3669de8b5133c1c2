"""The task registry: shipped tasks, tasks from entry points (the test plugin, a broken one)."""

from __future__ import annotations

import sys
from pathlib import Path

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


PLUGIN = Path(__file__).parent / "plugin_pkg"


def test_entry_point_tasks_are_listed_without_being_imported(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.delitem(sys.modules, "cellbench_toy", raising=False)
    assert "brightness" in task_names()
    assert "cellbench_toy" not in sys.modules  # listing imports nothing (cellbench --help)
    task = get_task("brightness")
    assert task.name == "brightness" and task.metric_names == ("accuracy",)


def test_a_broken_entry_point_is_one_line_naming_it(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cellbench.tasks]\nbroken = no_such_module:Task\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"task 'broken': entry point no_such_module:Task cannot"):
        get_task("broken")
