"""The workflow folders: a stray file named like one is skipped (and its id not reused), a
``state.json`` of the wrong shape is one line naming the file, the run folders a workflow made
are recorded."""

from __future__ import annotations

import json

import pytest

from cellbench.errors import BadInputError
from cellbench.workflow.state import (
    WorkflowState,
    create_workflow,
    find_workflow,
    state_problem,
    workflow_folders,
)


def test_a_file_named_like_a_workflow_folder_is_no_workflow(tmp_path):
    (tmp_path / "0001-tiny").write_text("x")
    assert workflow_folders(tmp_path) == [] and find_workflow(tmp_path, "tiny") is None
    folder = create_workflow(tmp_path, "tiny")  # the next id: 0001 is taken by the file
    assert folder.root.name == "0002-tiny" and folder.root.is_dir()
    assert [f.root.name for f in workflow_folders(tmp_path)] == ["0002-tiny"]


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ([], "not a JSON object"),
        ({"status": 5}, "'status' is not a word"),
        ({"phases": None}, "'phases' is not an object"),
        ({"phases": {"train": "x"}}, "phases.train is not an object"),
        ({"phases": {"a": {"status": 5}}}, "phases.a.status has the wrong type (int)"),
        ({"phases": {"a": {"started": "x"}}}, "phases.a.started has the wrong type (str)"),
        ({"phases": {"a": {"gates": [{"name": 1}]}}}, "phases.a.gates[0] is not a gate record"),
        ({"phases": {"a": {"outputs": [1]}}}, "phases.a.outputs is not a list of paths"),
        ({"phase_order": 5}, "'phase_order' is not a list of names"),
        ({"stopped_at": {"x": 1}}, "'stopped_at' is not a phase and gate"),
        ({"made_runs": "0001-x"}, "'made_runs' is not a list of names"),
    ],
)
def test_a_state_of_the_wrong_shape_is_refused_naming_the_file(tmp_path, state, problem):
    assert state_problem(state) == problem
    folder = create_workflow(tmp_path, "x")
    folder.state.write_text(json.dumps(state))
    with pytest.raises(BadInputError) as info:
        WorkflowState(folder)
    message = str(info.value)
    assert message.startswith(f"{folder.state}: damaged workflow state (") and "\n" not in message


def test_a_state_cellbench_writes_has_no_problem(tmp_path):
    state = WorkflowState(create_workflow(tmp_path, "x"))
    state.set_phase("a", status="done", started=1.0, gates=[{"name": "g", "ok": True}])
    state.add_made_run("0003-dec")
    state.set(status="completed", phase_order=["a"], stopped_at=None)
    assert state_problem(json.loads(state.folder.state.read_text())) is None
    assert WorkflowState(state.folder).made_runs() == {"0003-dec"}
