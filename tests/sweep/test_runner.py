"""End to end on generated data: grids on the local pool, failures, interruption and rerun,
the smoke → coarse → seeds → final phases (each trial is a real ``cellbench train`` process)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore
from tests.sweep.conftest import tiny_sets

runner = CliRunner()


def _sweep(tmp_path, *args):
    return runner.invoke(app, ["sweep", *args, "--runs-dir", str(tmp_path / "runs")])


def _state(tmp_path, name):
    return json.loads((tmp_path / "sweeps" / name / "state.json").read_text())


def test_four_trial_grid_on_two_workers_makes_four_runs_and_a_leaderboard(tmp_path, shapes):
    result = _sweep(
        tmp_path,
        "--profile", "demo", *tiny_sets(shapes),
        "--grid", "train.lr=1e-3,3e-3", "--grid", "train.batch_size=8,16",
        "--epochs", "2", "--workers", "2", "--name", "g4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    runs = RunStore(tmp_path / "runs").runs()
    assert sorted(r.name for r in runs) == [
        "g4-t001-lr1e-3-bs8",
        "g4-t002-lr1e-3-bs16",
        "g4-t003-lr3e-3-bs8",
        "g4-t004-lr3e-3-bs16",
    ]
    assert len({r.id for r in runs}) == 4
    assert [r["status"] for r in board["rows"]] == ["completed"] * 4
    assert board["metric"] == "val_loss" and board["mode"] == "min"
    values = [r["value"] for r in board["rows"]]
    assert values == sorted(values)  # lower val_loss first
    with open(tmp_path / "sweeps" / "g4" / "leaderboard.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert _state(tmp_path, "g4")["status"] == "completed"
    # the trials are ordinary runs
    listed = json.loads(runner.invoke(app, ["runs", "list", "--json", "--runs-dir",
                                            str(tmp_path / "runs")]).stdout)  # fmt: skip
    assert {r["status"] for r in listed} == {"completed"}
    compared = runner.invoke(app, ["runs", "compare", runs[0].root.name, runs[1].root.name,
                                   "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert compared.exit_code == 0 and "val_loss" in compared.stdout

    # `best.command` trains the best config again: same curve, as any run with its config
    best = board["best"]
    assert best["trial"] == board["rows"][0]["trial"]
    args = shlex.split(best["command"])[1:] + ["--run", "again", "--runs-dir", str(tmp_path / "r2")]
    # with the trial's CPU threads (the pool's cores // workers): float sums split over another
    # number of threads may differ in the last bit, and history.csv is compared byte for byte
    import torch

    from cellbench.sweep.local import cpu_count

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cpu_count() // 2))
    try:
        assert runner.invoke(app, args).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    again = (tmp_path / "r2" / "0001-again" / "history.csv").read_text()
    original = RunStore(tmp_path / "runs").find(best["run"]).history.read_text()
    assert again == original

    shown = runner.invoke(app, ["sweep", "show", "g4", "--runs-dir", str(tmp_path / "runs")])
    assert shown.exit_code == 0 and "g4-t00" in shown.stdout and "train it again" in shown.stdout


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, shapes):
    # a folder with no dataset in it: the trial fails when it reads it (a path that is not
    # there at all is refused before any trial, tests/cli/test_sweep.py)
    missing = tmp_path / "no-dataset-here"
    missing.mkdir()
    result = _sweep(
        tmp_path, "--profile", "demo", *tiny_sets(shapes),
        "--grid", f"data.path={shapes},{missing}", "--epochs", "1", "--workers", "2",
        "--name", "bad", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["trial"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["t001"]["status"] == "completed"
    assert rows["t002"]["status"] == "failed" and str(missing) in rows["t002"]["reason"]
    assert "1 trial(s) failed" in result.stderr
    # a rerun does not train the finished trials again (failed counts as finished)
    again = _sweep(
        tmp_path, "--profile", "demo", *tiny_sets(shapes),
        "--grid", f"data.path={shapes},{missing}", "--epochs", "1", "--name", "bad",
    )  # fmt: skip
    assert again.exit_code == 0
    run = RunStore(tmp_path / "runs").find(rows["t001"]["run"])
    assert len(read_events(run.events, kind="run_start")) == 1


def _wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_interrupted_sweep_rerun_finishes_without_retraining_finished_trials(tmp_path, shapes):
    # One worker, so the long trial starts only once the short one is recorded complete, and
    # 300 epochs (~35 ms each here): the interrupt lands seconds before the long trial could end.
    # (With two workers and 60 epochs the long trial could finish on a slow CI machine before
    # the short one was recorded, and the interrupt found nothing running.)
    argv = [
        sys.executable, "-m", "cellbench", "sweep", "--profile", "demo", *tiny_sets(shapes),
        "--grid", "train.epochs=1,300", "--workers", "1", "--name", "cut",
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = RunStore(tmp_path / "runs")

    def long_trial_training():
        state = tmp_path / "sweeps" / "cut" / "state.json"
        run = store.find("cut-t002-ep300")
        done = state.is_file() and _state(tmp_path, "cut")["trials"].get("t001", {}).get("status")
        return done == "completed" and run is not None and read_events(run.events, kind="epoch")

    try:
        assert _wait(long_trial_training), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    state = _state(tmp_path, "cut")
    assert state["status"] == "interrupted"
    assert state["trials"]["t002"]["status"] == "interrupted"
    long_run = store.find("cut-t002-ep300")
    assert read_events(long_run.events, kind="run_end")[-1]["status"] == "interrupted"

    proc = subprocess.run(argv, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _state(tmp_path, "cut")["status"] == "completed"
    short_run = store.find("cut-t001-ep1")
    assert len(read_events(short_run.events, kind="run_start")) == 1  # not trained again
    starts = read_events(long_run.events, kind="run_start")
    assert [s["resumed"] for s in starts] == [False, True]
    assert len(long_run.history.read_text().splitlines()) == 301  # header + 300 epochs


@pytest.mark.slow
def test_phases_smoke_coarse_seeds_final_with_the_final_run_from_new_weights(
    tmp_path, shapes, other_shapes
):
    from cellbench.engine.session import TrainRequest, train

    sets = dict(s.split("=", 1) for s in tiny_sets(shapes)[1::2])
    sets_yaml = "\n".join(f"  {k}: {v}" for k, v in sets.items())
    study = tmp_path / "study.yaml"
    study.write_text(
        "name: study\nprofile: demo\nset:\n" + sets_yaml + "\n"
        "space:\n  train.lr: [1.0e-3, 1.0e-2]\n"
        "phases:\n"
        "  - {name: smoke, kind: smoke, epochs: 1}\n"
        "  - {name: coarse, kind: grid, epochs: 1}\n"
        "  - {name: seeds, kind: seeds, top: 1, seeds: 2, epochs: 1}\n"
        "  - {name: final, kind: final, epochs: 2, seed: 5, "
        f"set: {{data.path: {other_shapes}}}}}\n"
    )
    result = _sweep(tmp_path, str(study), "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    phases = [r["phase"] for r in board["rows"]]
    assert sorted(phases) == ["coarse", "coarse", "final", "seeds", "seeds", "smoke"]
    assert _state(tmp_path, "study")["phases"] == {
        "smoke": "completed", "coarse": "completed", "seeds": "completed", "final": "completed",
    }  # fmt: skip
    rows = {r["phase"]: r for r in reversed(board["rows"])}  # the best row of each phase
    seeds_rows = [r for r in board["rows"] if r["phase"] == "seeds"]
    assert {r["seed"] for r in seeds_rows} == {1, 2}
    assert seeds_rows[0]["params"] == rows["coarse"]["params"]  # the top coarse config
    final = rows["final"]
    assert board["best"]["trial"] == final["trial"] and final["params"] == rows["seeds"]["params"]

    store = RunStore(tmp_path / "runs")
    final_run = store.find(final["run"])
    start = read_events(final_run.events, kind="run_start")[0]
    assert start["init_from"] is None and not start["resumed"]
    config = final_run.config.read_text()
    assert str(other_shapes) in config and "seed: 5" in config
    # a fresh run of the same config and seed starts from the very same weights
    fresh_paths, _ = train(
        TrainRequest(config_file=str(final_run.config), overrides=["train.epochs=1"],
                     run="fresh", runs_dir=tmp_path / "fresh")
    )  # fmt: skip
    fresh = read_events(fresh_paths.events, kind="run_start")[0]
    assert fresh["init_fingerprint"] == start["init_fingerprint"]
    # and it differs from the coarse trials' (other seed): the final took nothing from them
    coarse_run = store.find(rows["coarse"]["run"])
    coarse_start = read_events(coarse_run.events, kind="run_start")[0]
    assert coarse_start["init_fingerprint"] != start["init_fingerprint"]


@pytest.mark.parametrize("phase", ["seeds", "nope"])
def test_a_later_phase_alone_needs_the_one_before(tmp_path, shapes, phase):
    study = tmp_path / "s.yaml"
    study.write_text(
        f"profile: demo\nset: {{data.path: '{shapes}'}}\nspace: {{train.lr: [0.001]}}\n"
        "phases: [{kind: grid, epochs: 1}, {kind: seeds, seeds: 2}]\n"
    )
    result = _sweep(tmp_path, str(study), "--phase", phase)
    assert result.exit_code == 2
    assert ("needs results" if phase == "seeds" else "not a phase") in result.stderr
    assert os.path.isdir(tmp_path / "sweeps" / "s")


def test_a_sweep_stopped_by_sigterm_exits_143(tmp_path, shapes):
    """Issue 15, point 8: SIGTERM gives 143 like every other command (it gave 130)."""
    argv = [
        sys.executable, "-m", "cellbench", "sweep", "--profile", "demo", *tiny_sets(shapes),
        "--grid", "train.epochs=50,60", "--workers", "1", "--name", "term",
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def trial_running():
        state = tmp_path / "sweeps" / "term" / "state.json"
        return (
            state.is_file()
            and _state(tmp_path, "term")["trials"].get("t001", {}).get("status") == "running"
        )

    try:
        assert _wait(trial_running), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err.decode()
    assert "SIGTERM" in err.decode()
    assert _state(tmp_path, "term")["status"] == "interrupted"


@pytest.mark.slow
def test_a_trial_stopped_with_runs_stop_ends_interrupted_and_a_rerun_resumes_it(tmp_path, shapes):
    """`cellbench runs stop` (or the TUI's stop key) on one trial: the sweep goes on, records the
    trial `interrupted`, and running the sweep again resumes that trial from its last.pt."""
    argv = [
        sys.executable, "-m", "cellbench", "sweep", "--profile", "demo", *tiny_sets(shapes),
        "--grid", "train.epochs=1,300", "--workers", "2", "--name", "halt",
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    # 300 epochs (~35 ms each here) leave seconds for the stop to land on a slow machine
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RunStore(tmp_path / "runs")

    def long_trial_training():
        run = store.find("halt-t002-ep300")
        return run is not None and read_events(run.events, kind="epoch")

    try:
        assert _wait(long_trial_training)
        stop = runner.invoke(
            app, ["runs", "stop", "halt-t002-ep300", "--wait", "--runs-dir", str(tmp_path / "runs")]
        )
        assert stop.exit_code == 0, stop.output
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = _state(tmp_path, "halt")
    assert state["trials"]["t002"]["status"] == "interrupted"
    assert state["trials"]["t001"]["status"] == "completed"
    long_run = store.find("halt-t002-ep300")
    stopped_at = len(read_events(long_run.events, kind="epoch"))

    proc = subprocess.run(argv, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    state = _state(tmp_path, "halt")
    assert state["status"] == "completed" and state["trials"]["t002"]["status"] == "completed"
    starts = read_events(long_run.events, kind="run_start")
    assert starts[-1]["resumed"] and starts[-1]["start_epoch"] == stopped_at


def test_a_run_of_a_trial_s_name_trained_otherwise_is_never_counted_as_the_trial(tmp_path, shapes):
    """The sweep folder removed (as an error message may say), the sweep is run again with
    other epochs: the run left by the first one, named as the new trial, is not this trial's
    training. It is refused (exit 4) naming the run and the difference, not ranked as done."""
    import shutil

    def sweep(epochs: str):
        return _sweep(
            tmp_path, "--profile", "demo", *tiny_sets(shapes), "--grid", "train.lr=1e-3",
            "--epochs", epochs, "--workers", "1", "--name", "again",
        )  # fmt: skip

    assert sweep("1").exit_code == 0
    (run,) = RunStore(tmp_path / "runs").runs()
    shutil.rmtree(tmp_path / "sweeps" / "again")
    result = sweep("2")
    assert result.exit_code == 4, result.output
    assert run.root.name in result.stderr and "train.epochs 1 (this trial: 2)" in result.stderr
    assert len(read_events(run.events, kind="epoch")) == 1  # untouched
    # the same settings: the completed run is this trial's, not trained again
    shutil.rmtree(tmp_path / "sweeps" / "again")
    assert sweep("1").exit_code == 0
    assert _state(tmp_path, "again")["trials"]["t001"]["reason"] == "completed"
    assert len(RunStore(tmp_path / "runs").runs()) == 1
