"""What a phase runs: a training started afresh cleans its run first, a resumed one goes through
``train --resume`` (or counts as done), a sweep phase gets the workflow's sweep name and the
``--backend``, a cleanup phase ``--yes --json``, a glob its files."""

from __future__ import annotations

import json

from cellbench.runs.store import RunStore
from cellbench.workflow.commands import expand_globs, invocation, sweep_name
from cellbench.workflow.spec import PhaseSpec

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


def test_a_training_started_afresh_on_an_existing_run_cleans_it_first(tmp_path):
    store = RunStore(tmp_path)
    make_run(store, {"kind": "run_start"}, {"kind": "run_end", "status": "completed"})
    inv = invocation(TRAIN, "run", store, None, None)
    assert inv.before == [
        ("Clean the previous dig run", ["clean", "--run", "dig", "--all", "--yes"])
    ]
    assert inv.argv == TRAIN.argv


def test_a_resumed_training_continues_its_run_or_counts_as_done(tmp_path):
    store = RunStore(tmp_path / "a")
    make_run(store, {"kind": "run_start"}, {"kind": "run_end", "status": "interrupted"},
             checkpoint=True)  # fmt: skip
    assert invocation(TRAIN, "resume", store, None, None).argv == [
        "train", "--run", "dig", "--resume"]  # fmt: skip

    done = RunStore(tmp_path / "b")
    make_run(done, {"kind": "run_start"}, {"kind": "run_end", "status": "completed"})
    assert invocation(TRAIN, "resume", done, None, None).argv is None

    early = RunStore(tmp_path / "c")  # killed before its first checkpoint: from new weights
    make_run(early, {"kind": "run_start"})
    inv = invocation(TRAIN, "resume", early, None, None)
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
    glob = str(tmp_path / "*.png")
    assert expand_globs(["predict", glob, "--set", "x=[1,2]"]) == [
        "predict",
        a,
        b,
        "--set",
        "x=[1,2]",
    ]
    assert expand_globs(["predict", str(tmp_path / "*.jpg")]) == [
        "predict",
        str(tmp_path / "*.jpg"),
    ]
