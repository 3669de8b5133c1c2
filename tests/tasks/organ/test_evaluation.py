"""``cellbench eval --run ORGAN`` (issue 15 point 7): an organ run evaluates on its test (or val)
fold like every other run: accuracy, per tissue, calibration with the run's own temperature."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.engine.session import TrainRequest, train
from cellbench.runs.events import read_events

runner = CliRunner()


@pytest.fixture(scope="module")
def organ_run(tmp_path_factory):
    """An organ head trained on vit-demo features of a generated 3-fold store (fold 3 = test)."""
    from cellbench.data.prepare import prepare
    from cellbench.data.synth import synth
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    base = tmp_path_factory.mktemp("organ-eval")
    synth(base / "raw", folds=3, tiles=24, seed=5, size=64)
    prepare(base / "raw", base / "store")
    features, _ = extract_features(base / "store", build_backbone("vit-demo", device="cpu"))
    sets = ["task=organ", f"data.features={features}", "organ.target=family", "train.epochs=3"]
    paths, result = train(TrainRequest(overrides=[*sets, "train.amp=off"], runs_dir=base / "runs"))
    assert result.status == "completed", result.reason
    return base / "runs", paths


def test_eval_on_test_reports_accuracy_per_tissue_and_calibration(organ_run):
    runs, paths = organ_run
    args = ["eval", "--run", paths.root.name, "--split", "test", "--json", "--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["fold"] == 3 and report["task"] == "organ"
    metrics = report["metrics"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "ece"} <= set(metrics)
    rows = report["per_tissue"]
    assert sum(r["tiles"] for r in rows) == report["num_samples"] == 24
    correct = sum(r["correct"] for r in rows)
    assert metrics["accuracy"] == pytest.approx(correct / 24)
    trained = json.loads(paths.metrics.read_text())["calibration"]["temperature"]
    assert report["calibration"]["temperature"] == pytest.approx(trained)
    assert 0 <= report["calibration"]["ece"] <= 1
    for name in ("test-best.json", "per_tissue_test-best.csv", "confusion_test-best.png"):
        assert (paths.eval_dir / name).stat().st_size > 0
    (event,) = read_events(paths.events, kind="eval")[-1:]
    assert event["split"] == "test" and "ece" in event["metrics"]


def test_eval_on_val_says_the_temperature_was_fitted_there_and_renders_tables(organ_run):
    runs, paths = organ_run
    result = runner.invoke(app, ["eval", "--run", paths.root.name, "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "Per tissue" in result.stdout and "temperature" in result.stdout
    assert "fitted on this val fold" in result.stderr


def test_nuclei_options_are_refused_for_an_organ_run(organ_run):
    runs, paths = organ_run
    args = ["eval", "--run", paths.root.name, "--export", "x", "--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--export is not an option of organ runs" in result.stderr
