"""Comparing runs: final and best value per metric (min for losses, max otherwise), curves."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.engine.history import History
from cellbench.runs.compare import compare, load_curves, lower_is_better, metric_names, plot_curves
from cellbench.runs.events import EventWriter
from cellbench.runs.store import RunStore

runner = CliRunner()


def make_run(store, name, rows):
    run = store.create(name)
    History(run.history, rows).write()
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="simple_cnn")
        w.emit("run_end", status="completed")
    return run


@pytest.fixture
def two_runs(tmp_path):
    store = RunStore(tmp_path)
    a = make_run(store, "lr-small", [
        {"epoch": 1, "train_loss": 1.2, "val_loss": 1.0, "val_accuracy": 0.5, "lr": 0.1},
        {"epoch": 2, "train_loss": 0.8, "val_loss": 0.7, "val_accuracy": 0.7, "lr": 0.05},
        {"epoch": 3, "train_loss": 0.6, "val_loss": 0.9, "val_accuracy": 0.6, "lr": 0.01},
    ])  # fmt: skip
    b = make_run(store, "lr-big", [
        {"epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "val_accuracy": 0.4, "lr": 0.1},
    ])  # fmt: skip
    return store, a, b


def test_final_and_best_follow_the_metric_direction(two_runs):
    _, a, b = two_runs
    curves = load_curves([a, b])
    assert metric_names(curves) == ["train_loss", "val_loss", "val_accuracy"]  # not epoch, lr
    first, second = compare(curves, ["val_loss", "val_accuracy"])
    assert first["metrics"]["val_loss"] == {"final": 0.9, "best": 0.7, "best_epoch": 2}
    assert first["metrics"]["val_accuracy"] == {"final": 0.6, "best": 0.7, "best_epoch": 2}
    assert second["metrics"]["val_loss"]["best_epoch"] == 1
    assert first["name"] == "lr-small" and first["status"] == "completed"
    assert lower_is_better("val_loss") and not lower_is_better("val_macro_f1")
    assert lower_is_better("val_ece") and lower_is_better("val_hv_mse")  # the shared rule


def test_plot_writes_a_png(two_runs, tmp_path):
    _, a, b = two_runs
    path = plot_curves(load_curves([a, b]), ["val_loss", "val_accuracy"], tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_table_json_plot_and_errors(two_runs, tmp_path):
    store, _, _ = two_runs
    root = ["--runs-dir", str(store.root)]
    table = runner.invoke(app, ["runs", "compare", "lr-small", "2", *root])
    assert table.exit_code == 0, table.output
    assert "0001-lr-small" in table.stdout and "0.7 (2)" in table.stdout
    as_json = runner.invoke(app, ["runs", "compare", "1", "2", "-m", "val_loss", "--json", *root])
    records = json.loads(as_json.stdout)
    assert [list(r["metrics"]) for r in records] == [["val_loss"], ["val_loss"]]
    png = tmp_path / "curves.png"
    runner.invoke(app, ["runs", "compare", "1", "2", "--plot", str(png), *root])
    assert png.is_file()
    unknown = runner.invoke(app, ["runs", "compare", "1", "-m", "val_los", *root])
    assert unknown.exit_code == 2 and "did you mean 'val_loss'?" in unknown.stderr
    missing = runner.invoke(app, ["runs", "compare", "1", "9", *root])
    assert missing.exit_code == 3 and "no run '9'" in missing.stderr
