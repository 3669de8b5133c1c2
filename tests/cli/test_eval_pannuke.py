"""``cellbench eval pannuke``: tables, --json, --csv, folds, workers, and bad input (exit 3,
nothing written)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.nuclei_labels import write_pannuke
from cellbench.data.perturb import perturb_tiles
from cellbench.data.prepare import prepare
from cellbench.data.store import open_fold
from cellbench.data.synth import synth

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Generated raw folds (official layout), their store, and perturbed predictions of both
    folds written in PanNuke format (flat layout)."""
    root = tmp_path_factory.mktemp("pannuke_eval")
    synth(root / "raw", folds=2, tiles=6, seed=2, size=64, empty_fraction=0.2)
    prepare(root / "raw", root / "store", folds=[1, 2])
    for k in (1, 2):
        fold = open_fold(root / "store", k)
        inst, types = perturb_tiles(fold.inst, fold.types, seed=k)
        write_pannuke(root / "pred" / f"fold{k}", inst, types, fold.tissues)
    return root


def invoke(*args):
    return runner.invoke(app, ["eval", "pannuke", *map(str, args)])


def test_truth_against_itself_prints_ones(data):
    result = invoke("--true", data / "raw" / "Fold 1", "--pred", data / "store" / "fold1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("bPQ", "mPQ", "mPQ+", "AJI+", "Per type", "Per tissue", "Neoplastic"):
        assert word in out
    assert "1.0000" in out and "NaN" not in out and "nan" not in out


def test_json_has_pannuke_bpq_and_mpq_at_the_top(data, tmp_path):
    table = tmp_path / "tiles.csv"
    result = invoke(
        "--true", data / "store", "--pred", data / "pred", "--folds", "1", "--json",
        "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 0 < summary["bPQ"] < 1 and 0 < summary["mPQ"] < 1
    for key in ("bPQ_image_avg", "mPQ_image_avg", "mPQ_plus", "dice", "aji", "aji_plus"):
        assert key in summary
    assert set(summary["per_type"]) >= {"Neoplastic", "Epithelial"}
    assert "NaN" not in result.stdout
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 6 and rows[0]["fold"] == "1"
    scored = [float(r["bPQ"]) for r in rows if r["bPQ"]]
    assert np.mean(scored) == pytest.approx(summary["bPQ_image_avg"], abs=1e-5)


def test_all_folds_averaged_and_workers_agree(data):
    one = invoke("--true", data / "raw", "--pred", data / "pred", "--json")
    two = invoke("--true", data / "raw", "--pred", data / "pred", "--json", "--workers", "2")
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a == b
    assert set(a["folds"]) == {"1", "2"}
    assert a["bPQ"] == pytest.approx((a["folds"]["1"]["bPQ"] + a["folds"]["2"]["bPQ"]) / 2)
    assert a["tiles"] == 12


def test_empty_predictions_score_zero_not_nan(data, tmp_path):
    fold = open_fold(data / "store", 1)
    empty = np.zeros_like(fold.inst)
    write_pannuke(tmp_path / "empty", empty, empty.astype(np.uint8), fold.tissues)
    result = invoke("--true", data / "store" / "fold1", "--pred", tmp_path / "empty", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bPQ"] == 0.0 and summary["mPQ"] == 0.0 and summary["dice"] == 0.0
    assert summary["pred_nuclei"] == 0


def _copy_pred(data, tmp_path):
    return shutil.copytree(data / "pred" / "fold1", tmp_path / "pred")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("five_channels", "expected (N, H, W, 6)"),
        ("fewer_tiles", "tiles of 64x64, but"),
        ("other_size", "6 tiles of 32x32, but"),
        ("negative", "negative instance ids"),
        ("fraction", "fractional instance ids"),
        ("tissues", "types.npy: tile 0 is"),
        ("truncated", "truncated .npy file"),
        ("no_types", "types.npy: file not found"),
    ],
)
def test_bad_predictions_exit_3_naming_the_file_and_write_nothing(data, tmp_path, damage, message):
    pred = _copy_pred(data, tmp_path)
    masks = np.load(pred / "masks.npy")
    tissues = list(np.load(pred / "types.npy"))
    if damage == "five_channels":
        np.save(pred / "masks.npy", masks[..., :5])
    elif damage == "fewer_tiles":
        np.save(pred / "masks.npy", masks[:4])
        np.save(pred / "types.npy", np.array(tissues[:4]))
    elif damage == "other_size":
        np.save(pred / "masks.npy", masks[:, :32, :32])
    elif damage == "negative":
        masks[2, 5, 5, 1] = -1
        np.save(pred / "masks.npy", masks)
    elif damage == "fraction":
        masks[3, 5, 5, 0] = 0.25
        np.save(pred / "masks.npy", masks)
    elif damage == "tissues":
        np.save(pred / "types.npy", np.array(["Kidney"] * len(tissues)))
    elif damage == "truncated":
        raw = (pred / "masks.npy").read_bytes()
        (pred / "masks.npy").write_bytes(raw[:-1000])
    elif damage == "no_types":
        (pred / "types.npy").unlink()
    out = tmp_path / "tiles.csv"
    result = invoke("--true", data / "store" / "fold1", "--pred", pred, "--csv", out)
    assert result.exit_code == 3, result.output
    assert message in result.stderr and str(pred) in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # one message (may wrap once)
    assert result.stdout == "" and not out.exists()


def test_usage_errors(data, tmp_path):
    result = invoke("--true", data / "raw" / "Fold 1", "--pred", data / "pred", "--folds", "x")
    assert result.exit_code == 2 and "--folds" in result.stderr
    result = invoke("--true", data / "store", "--pred", data / "pred" / "fold1")
    assert result.exit_code == 2 and "name one fold folder" in result.stderr
    result = invoke("--true", data / "store", "--pred", tmp_path, "--folds", "1")
    assert result.exit_code == 3 and "no masks.npy" in result.stderr
    result = invoke("--true", data / "store", "--pred", data / "pred", "--folds", "3")
    assert result.exit_code == 3 and "fold 3 not found" in result.stderr


def test_eval_group_keeps_run_evaluation_and_lists_pannuke():
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "pannuke" in result.stdout and "--run" in result.stdout
    result = runner.invoke(app, ["eval", "pannuke", "--help"])
    assert result.exit_code == 0 and "--true" in result.stdout and "--workers" in result.stdout


@pytest.mark.parametrize("before", [["--run", "1"], ["--split", "test"], ["--json"]])
def test_run_evaluation_options_before_pannuke_are_refused_not_ignored(data, tmp_path, before):
    """`eval --run 1 pannuke ...` used to score the folders and silently drop --run."""
    table = tmp_path / "tiles.csv"
    result = runner.invoke(
        app,
        ["eval", *before, "pannuke", "--true", str(data / "store"), "--pred", str(data / "pred"),
         "--csv", str(table)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert before[0] in result.output and "eval pannuke" in result.output
    assert not table.exists()
