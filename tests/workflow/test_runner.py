"""The runner: a rerun reopens the folder of its own name only, a train phase's run is recorded
as the workflow's (killed or not) and only such a run is cleaned; a run it did not make stops
the workflow before anything runs, with no folder made."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from cellbench.errors import RunConflict
from cellbench.runs.store import RunStore
from cellbench.workflow.runner import WorkflowOptions, WorkflowRunner, open_workflow, run_workflow
from cellbench.workflow.spec import WorkflowSpec, load_workflow

TRAIN = """
name: {name}
params: {{run: dec}}
phases:
  - {{name: decoder, command: "train --profile nuclei-demo --run ${{run}}"}}
"""


def test_a_rerun_opens_the_folder_of_its_own_name_only(tmp_path):
    for folder in ("0001-x", "0002-other"):
        (tmp_path / folder).mkdir()

    def named(name: str) -> WorkflowSpec:
        return WorkflowSpec(name, "", {}, [], "wf.yaml")

    assert open_workflow(named("2"), tmp_path) is None  # not folder 2
    assert open_workflow(named("0001-x"), tmp_path) is None  # not workflow x's folder
    assert open_workflow(named("x"), tmp_path).root.name == "0001-x"


def _spec(tmp_path, name: str) -> WorkflowSpec:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TRAIN.format(name=name))
    return load_workflow(str(path))


def _run(tmp_path, spec: WorkflowSpec, **options):
    store = RunStore(tmp_path / "runs")
    out = Console(file=io.StringIO())
    root, sweeps = tmp_path / "workflows", tmp_path / "sweeps"
    return run_workflow(spec, root, store, sweeps, WorkflowOptions(**options), out)


@pytest.fixture
def trainings(monkeypatch, tmp_path):
    """Each phase command "trains" run dec (its folder and metrics) without a process; the
    commands run are listed; ``stop`` makes the next one end as a Ctrl-C would."""
    ran: list[list[str]] = []
    stop: list[bool] = []

    def execute(self, phase, argv, output, started, sweep_dir):
        ran.append(argv)
        if argv[0] == "train":
            run = self.store.find("dec") or self.store.create("dec")
            run.metrics.write_text("{}")
        if stop:
            raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(WorkflowRunner, "_execute", execute)
    return ran, stop


def test_the_run_a_workflow_made_is_recorded_and_only_it_is_cleaned(tmp_path, trainings):
    ran, stop = trainings
    stop.append(True)
    with pytest.raises(KeyboardInterrupt):  # killed mid-training: the run is still its own
        _run(tmp_path, _spec(tmp_path, "wf"))
    state = json.loads((tmp_path / "workflows/0001-wf/state.json").read_text())
    assert state["made_runs"] == ["0001-dec"]

    stop.clear()
    runner, _ = _run(tmp_path, _spec(tmp_path, "wf"), fresh=True, dry_run=True)
    [step] = runner.plan()
    assert step.before == [["clean", "--run", "dec", "--all", "--yes"]]
    assert "cleans run dec first" in step.why and step.to_dict()["before"] == step.before

    ran.clear()
    with pytest.raises(RunConflict, match="0001-dec: phase decoder of workflow other"):
        _run(tmp_path, _spec(tmp_path, "other"))  # another workflow's run: never touched
    assert ran == [] and not list((tmp_path / "workflows").glob("*-other"))
    runner, _ = _run(tmp_path, _spec(tmp_path, "other"), dry_run=True)
    assert runner.plan()[0].refused and runner.plan()[0].why.startswith("refused: run dec")
