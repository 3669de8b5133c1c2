"""``cellbench eval``: tables, --json, files written, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from tests.helpers_eval import copy_runs, edit_checkpoint, trained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture
def runs(template, tmp_path):
    return copy_runs(template, tmp_path)


def test_eval_prints_metrics_per_class_and_paths(runs):
    root, run = runs
    result = runner.invoke(app, ["eval", "--run", "1", "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("accuracy", "macro_f1", "loss", "Per class", "circle", "triangle", "support"):
        assert word in out
    assert str(run.eval_dir / "confusion_val-best.png") in out
    assert (run.eval_dir / "val-best.json").is_file()


def test_eval_json_is_the_metrics_dict(runs):
    root, run = runs
    args = ["eval", "--run", "tiny", "--split", "test", "--checkpoint", "last", "--json"]
    result = runner.invoke(app, [*args, "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert data["split"] == "test" and data["checkpoint"] == "last"
    assert 0.0 <= data["metrics"]["accuracy"] <= 1.0
    assert data == json.loads((run.eval_dir / "test-last.json").read_text())


def test_eval_test_without_test_split_exits_3(runs):
    root, run = runs
    edit_checkpoint(run.best_checkpoint, config={"data": {"test_ratio": 0.0}})
    result = runner.invoke(app, ["eval", "--run", "1", "--split", "test", "--runs-dir", str(root)])
    assert result.exit_code == 3
    assert "no test split" in result.stderr and "--split val" in result.stderr
    assert result.stdout == ""


def test_eval_expect_warning_goes_to_stderr(runs):
    root, run = runs
    edit_checkpoint(run.best_checkpoint, config={"expect": {"val_accuracy": [2.0, 3.0]}})
    result = runner.invoke(app, ["eval", "--run", "1", "--json", "--runs-dir", str(root)])
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "expect.val_accuracy" in result.stderr
    assert json.loads(result.stdout)["warnings"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--run", "1", "--split", "train"], 2, "--split train"),
        (["--run", "1", "--checkpoint", "first"], 2, "--checkpoint first"),
        (["--run", "tinny"], 3, "did you mean"),
    ],
)
def test_eval_usage_errors(runs, args, code, message):
    root, _ = runs
    result = runner.invoke(app, ["eval", *args, "--runs-dir", str(root)])
    assert result.exit_code == code
    assert message in result.stderr


def test_eval_without_run_takes_the_latest(runs, tmp_path):
    root, run = runs
    result = runner.invoke(app, ["eval", "--json", "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    assert "evaluating the latest run, 0001-tiny" in result.stderr
    assert json.loads(result.stdout)["run"] == run.root.name
    empty = runner.invoke(app, ["eval", "--runs-dir", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no runs in" in empty.stderr


def test_eval_missing_checkpoint_exits_3(runs):
    root, run = runs
    run.best_checkpoint.unlink()
    result = runner.invoke(app, ["eval", "--run", "1", "--runs-dir", str(root)])
    assert result.exit_code == 3
    assert "best.pt" in result.stderr
