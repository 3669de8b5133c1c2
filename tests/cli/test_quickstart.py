"""`cellbench quickstart --classify`: the classification study on generated data, twice (the
second is a retrain)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize

runner = CliRunner()
SMALL = ["--classify", "--tiles", "3", "--tile-size", "64", "--images", "24", "--epochs", "2"]


def test_quickstart_runs_every_step_and_a_second_run_retrains_from_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["quickstart", *SMALL])
    assert first.exit_code == 0, first.output[-3000:]
    for step in (
        "data synth",
        "data prepare",
        "data check",
        "data stats",
        "--overfit-small",
        "--lr-find",
        "train --profile demo",
        "eval --run quickstart",
        "predict --run",
    ):
        assert step in first.stdout, step

    store = tmp_path / "data/quickstart/pannuke"
    manifest = json.loads((store / "fold1" / "manifest.json").read_text())
    assert manifest["arrays"]["images"]["dtype"] == "uint8"
    assert manifest["arrays"]["hv"]["dtype"] == "float32"
    run = RunStore(tmp_path / "runs").resolve("quickstart")
    assert summarize(run).status == "completed"
    assert summarize(run).epochs == 2
    assert (run.root / "lr_find.json").is_file()
    assert (run.eval_dir / "test-best.json").is_file()
    first_start = read_events(run.events, kind="run_start")[-1]

    # again, with another dataset size: the generated data is replaced, the run retrained
    second = runner.invoke(app, ["quickstart", *SMALL[:-4], "--images", "28", "--epochs", "2"])
    assert second.exit_code == 0, second.output[-3000:]
    assert "clean --run quickstart --all --yes" in second.stdout
    again = RunStore(tmp_path / "runs").resolve("quickstart")
    assert again.root == run.root  # the same run, retrained
    starts = read_events(again.events, kind="run_start")
    assert len(starts) == 1  # clean --all removed the first attempt's events
    assert starts[0]["init_fingerprint"] == first_start["init_fingerprint"]  # same seed, same start
    assert len(list((tmp_path / "data/quickstart/shapes/circle").glob("*.png"))) == 28
    assert summarize(again).status == "completed"


def test_quickstart_stops_at_a_failing_step_with_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "data/quickstart/shapes"
    blocker.mkdir(parents=True)
    (blocker / "notes.txt").write_text("not a shapes dataset")
    result = runner.invoke(app, ["quickstart", *SMALL])
    assert result.exit_code == 3
    assert "quickstart stopped at step 5" in result.stderr
    assert "notes.txt" not in result.stderr and blocker.joinpath("notes.txt").exists()
