"""TensorBoard out: ``train.tensorboard`` during training and ``runs export --tensorboard`` after;
read back with tensorboard's own ``EventAccumulator``: every history column, equal values."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.engine.session import TrainRequest, train
from cellbench.engine.tensorboard import flat_hparams
from cellbench.runs.history import read_history

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

runner = CliRunner()


def read_back(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def assert_equals_history(acc: EventAccumulator, rows) -> None:
    columns = [c for c in rows[0] if c != "epoch"]
    assert set(columns) <= set(acc.Tags()["scalars"]), acc.Tags()["scalars"]
    for column in columns:
        logged = {e.step: e.value for e in acc.Scalars(column)}
        expected = {r["epoch"]: r[column] for r in rows if r.get(column) is not None}
        assert logged.keys() == expected.keys(), column
        for epoch, value in expected.items():
            # event files hold float32
            assert math.isclose(logged[epoch], value, rel_tol=1e-6, abs_tol=1e-12), column


def hparams_of(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {k: v.ListFields()[0][1] for k, v in start.session_start_info.hparams.items()}


def test_training_writes_every_history_column_and_the_config(tmp_path, tiny_overrides):
    overrides = tiny_overrides("train.tensorboard=true", "train.epochs=2")
    paths, result = train(TrainRequest(overrides=overrides, run="tb", runs_dir=tmp_path / "runs"))
    assert result.status == "completed"
    rows = read_history(paths.history)
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(rows[0])
    acc = read_back(paths.root / "tensorboard")
    assert_equals_history(acc, rows)
    hparams = hparams_of(acc)
    assert hparams["train.epochs"] == 2 and hparams["model.name"] == "simple_cnn"


def test_export_converts_an_existing_run(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    paths, _ = train(TrainRequest(overrides=tiny_overrides(), run="old", runs_dir=runs))
    assert not (paths.root / "tensorboard").exists()  # off by default
    out = tmp_path / "tb"
    args = ["runs", "export", "old", "--tensorboard", str(out), "--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_equals_history(read_back(out / paths.root.name), read_history(paths.history))
    # exported again: the same steps, not twice as many
    assert runner.invoke(app, args).exit_code == 0
    acc = read_back(out / paths.root.name)
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2, 3]


def test_export_of_a_run_without_epochs_exits_3(tmp_path):
    from cellbench.runs.store import RunStore

    store = RunStore(tmp_path / "runs")
    run = store.create("empty")
    args = ["runs", "export", "empty", "--tensorboard", str(tmp_path / "tb")]
    result = runner.invoke(app, [*args, "--runs-dir", str(store.root)])
    assert result.exit_code == 3
    assert f"{run.history}: no epoch finished yet" in result.stderr


def test_hparams_are_flat_numbers_strings_and_booleans():
    flat = flat_hparams({"train": {"lr": 0.1, "ema": True, "grad_clip": None}, "tags": [1, 2]})
    assert flat == {"train.lr": 0.1, "train.ema": True, "train.grad_clip": "None", "tags": "[1, 2]"}
