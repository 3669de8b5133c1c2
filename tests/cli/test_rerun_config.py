"""`cellbench train --config runs/<run>/config.yaml` re-runs a run exactly (issue 2)."""

from __future__ import annotations

from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.classify.shapes import write_shapes_dataset
from cellbench.runs.store import RunStore

runner = CliRunner()


def test_a_saved_config_reruns_the_same_curve(tmp_path):
    data = tmp_path / "shapes"
    write_shapes_dataset(data, n_per_class=12, image_size=32, seed=0)
    runs = tmp_path / "runs"
    first = runner.invoke(app, [
        "train", "--data", str(data), "--model", "simple_cnn", "--epochs", "2", "--run", "first",
        "--set", "data.image_size=32", "--set", "train.batch_size=16",
        "--set", "model.args={channels: [8, 16], hidden: 32}", "--set", "train.lr=0.003",
        "--runs-dir", str(runs),
    ])  # fmt: skip
    assert first.exit_code == 0, first.output
    run = RunStore(runs).resolve("first")
    again = runner.invoke(
        app, ["train", "--config", str(run.config), "--run", "again", "--runs-dir", str(runs)]
    )
    assert again.exit_code == 0, again.output
    rerun = RunStore(runs).resolve("again")
    assert rerun.config.read_text() == run.config.read_text()
    assert rerun.history.read_text() == run.history.read_text()
