"""``cellbench predict``: one row per image, --json, --top, unreadable images exit 3."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.tasks.classify.evaluation import evaluate_run
from tests.helpers_eval import copy_runs, trained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return copy_runs(trained_run(tmp_path_factory), tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def expected(runs):
    """{image path: label} as evaluation predicted the val images."""
    _, run = runs
    evaluate_run(run, split="val")
    with open(run.eval_dir / "predictions_val-best.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["source"]: r["predicted"] for r in rows[:6]}


def test_predict_table(runs, expected):
    root, _ = runs
    result = runner.invoke(app, ["predict", "--run", "1", *expected, "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    for path, label in expected.items():
        line = next(line for line in result.stdout.splitlines() if path in line)
        assert label in line


def test_predict_json_top_k(runs, expected):
    root, _ = runs
    args = ["predict", "--run", "tiny", *expected, "--json", "--top", "3", "--runs-dir", str(root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["image"] for d in data] == list(expected)
    assert [d["label"] for d in data] == list(expected.values())
    for d in data:
        probs = [t["probability"] for t in d["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert d["top"][0] == {"label": d["label"], "probability": d["probability"]}


def test_unreadable_images_exit_3_and_print_nothing(runs, expected, tmp_path):
    root, _ = runs
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    missing = tmp_path / "missing.jpg"
    good = next(iter(expected))
    args = ["predict", "--run", "1", good, str(broken), str(missing), "--json"]
    result = runner.invoke(app, [*args, "--runs-dir", str(root)])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "broken.png: cannot read image" in result.stderr
    assert "missing.jpg: image not found" in result.stderr


def test_predict_bad_checkpoint_option(runs, expected):
    root, _ = runs
    args = ["predict", "--run", "1", next(iter(expected)), "--checkpoint", "x"]
    result = runner.invoke(app, [*args, "--runs-dir", str(root)])
    assert result.exit_code == 2
    assert "--checkpoint x" in result.stderr


def test_a_bad_image_fails_before_the_model_is_loaded(tmp_path_factory, tmp_path):
    root, run = copy_runs(trained_run(tmp_path_factory), tmp_path)
    run.best_checkpoint.write_bytes(b"a checkpoint that would fail to load")
    args = ["predict", "--run", "1", str(tmp_path / "missing.png"), "--runs-dir", str(root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    assert "missing.png: image not found" in result.stderr and "checkpoint" not in result.stderr
