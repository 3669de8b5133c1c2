"""What a phase runs: a training started afresh cleans its run first (only a run the workflow
made: any other is refused), a resumed one goes through ``train --resume`` (or counts as done),
a sweep phase gets the workflow's sweep name and the ``--backend``, a cleanup phase ``--yes
--json``, a glob its files (and a parameter's brackets stay literal)."""

from __future__ import annotations

import json

import pytest

from cellbench.errors import RunConflict
from cellbench.runs.store import RunStore
from cellbench.workflow.commands import expand_globs, invocation, sweep_name
from cellbench.workflow.spec import PhaseSpec, load_workflow

TRAIN = PhaseSpec("decoder", "decoder", ["train", "--profile", "nuclei-demo", "--run", "dig"], [])


def make_run(store: RunStore, *events: dict, checkpoint: bool = False):
    """A run folder as a training leaves it: its events, and a last checkpoint or none."""
    run = store.create("dig")
    lines = [{"kind": e.pop("kind"), "time": 1.0 + i, **e} for i, e in enumerate(events)]
    run.events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    if checkpoint:
        run.checkpoints.mkdir()
        run.last_checkpoint.write_bytes(b"checkpoint")
    return run


def test_a_new_training_runs_as_written(tmp_path):
    inv = invocation(TRAIN, "run", RunStore(tmp_path), None, None)
    assert inv.argv == TRAIN.argv and inv.before == []


def test_a_training_started_afresh_on_a_run_the_workflow_made_cleans_it_first(tmp_path):
    store = RunStore(tmp_path)
    make_run(store, {"kind": "run_start"}, {"kind": "run_end", "status": "completed"})
    inv = invocation(TRAIN, "run", store, None, None, made={"0001-dig"})
    assert inv.before == [
        ("Clean the previous dig run", ["clean", "--run", "dig", "--all", "--yes"])
    ]
    assert inv.argv == TRAIN.argv


@pytest.mark.parametrize("action", ["run", "resume"])
def test_a_trained_run_the_workflow_did_not_make_is_refused_never_cleaned(tmp_path, action):
    store = RunStore(tmp_path)  # trained by hand, or by another workflow
    make_run(store, {"kind": "run_start"}, {"kind": "run_end", "status": "completed"})
    with pytest.raises(RunConflict) as info:
        invocation(TRAIN, action, store, None, None, made={"0002-other"}, workflow="wf")
    message = str(info.value)
    assert "0001-dig" in message and "was not made by this workflow" in message
    assert "another run name" in message and "cellbench clean --run dig" in message


def test_an_emptied_run_the_workflow_did_not_make_is_trained_in_without_a_clean(tmp_path):
    store = RunStore(tmp_path)
    store.create("dig")  # what `cellbench clean --run dig --all` leaves: nothing trained
    inv = invocation(TRAIN, "run", store, None, None, made=set())
    assert inv.argv == TRAIN.argv and inv.before == []


def test_a_resumed_training_continues_its_run_or_counts_as_done(tmp_path):
    store = RunStore(tmp_path / "a")
    make_run(store, {"kind": "run_start"}, {"kind": "run_end", "status": "interrupted"},
             checkpoint=True)  # fmt: skip
    made = {"0001-dig"}  # each store's run was made by the workflow
    assert invocation(TRAIN, "resume", store, None, None, made).argv == [
        "train", "--run", "dig", "--resume"]  # fmt: skip

    done = RunStore(tmp_path / "b")
    make_run(done, {"kind": "run_start"}, {"kind": "run_end", "status": "completed"})
    assert invocation(TRAIN, "resume", done, None, None, made).argv is None

    early = RunStore(tmp_path / "c")  # killed before its first checkpoint: from new weights
    make_run(early, {"kind": "run_start"})
    inv = invocation(TRAIN, "resume", early, None, None, made)
    assert inv.argv == TRAIN.argv and inv.before[0][1][:3] == ["clean", "--run", "dig"]


def test_sweep_cleanup_and_glob_phases(tmp_path):
    sweep = PhaseSpec("families", "f", ["sweep", "cellvit_families"], [])
    name = sweep_name("cellvit-optimus", 3, sweep, 2)
    assert name == "cellvit-optimus-w3-families-r2"
    argv = invocation(sweep, "run", RunStore(tmp_path), name, "ray").argv
    assert argv == ["sweep", "cellvit_families", "--name", name, "--backend", "ray"]
    clean = PhaseSpec("cleanup", "c", ["clean", "--features", "old"], [])
    assert invocation(clean, "clean", RunStore(tmp_path), None, None).argv[-2:] == [
        "--yes", "--json"]  # fmt: skip
    for name in ("b.png", "a.png"):
        (tmp_path / name).write_bytes(b"")
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    predict = PhaseSpec("p", "p", ["predict", str(tmp_path / "*.png"), "--set", "x=[1,2]"], [])
    predict.globs = {1: str(tmp_path / "*.png")}
    assert expand_globs(predict) == ["predict", a, b, "--set", "x=[1,2]"]
    jpg = str(tmp_path / "*.jpg")
    assert expand_globs(PhaseSpec("p", "p", ["predict", jpg], [], globs={1: jpg})) == [
        "predict",
        jpg,
    ]


def test_what_a_parameter_brings_into_a_glob_is_literal(tmp_path):
    """``tiles[1]/*.png`` with ``tiles[1]`` from a parameter: that folder's files, never
    ``tiles1``'s (a shell-style ``[1]`` class); a ``*`` in a value is no wildcard either."""
    for folder, name in (("tiles[1]", "mine.png"), ("tiles1", "other.png"), ("a*b", "x.png")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"")
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "y.png").write_bytes(b"")
    path = tmp_path / "wf.yaml"
    path.write_text(
        "params: {dir: 'tiles[1]', star: 'a*b', root: ''}\n"
        "phases:\n"
        "  - {name: show, command: 'predict ${root}/${dir}/*.png ${root}/${star}/y.png'}\n"
    )
    [phase] = load_workflow(str(path), [f"root={tmp_path}"]).phases
    assert expand_globs(phase) == [
        "predict",
        str(tmp_path / "tiles[1]" / "mine.png"),
        str(tmp_path / "a*b" / "y.png"),  # no '*' written in the file: kept as it is
    ]
