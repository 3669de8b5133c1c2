"""Issue 15, point 1: no output flag replaces a file cellbench did not write (exit 4, the file
named, the file intact) unless ``--overwrite``, and none writes inside a store or a run's own
files even with it. One test per flag: predict --out, eval --export, eval pannuke --csv,
data stats --plot, runs compare --plot, the sweep folder (leaderboard.csv), data synth/prepare
--out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cellbench import outputs
from cellbench.cli.app import app
from cellbench.runs.store import RunStore
from tests.cli.test_runs import make_run
from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]
runner = CliRunner()
USER = b"my own work, not cellbench's\n"


def _user_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(USER)
    return path


def _refused(result, path: Path) -> None:
    assert result.exit_code == 4, result.output[-2000:]
    assert str(path) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from cellbench.data.prepare import prepare
    from cellbench.data.synth import synth

    root = tmp_path_factory.mktemp("outputs")
    synth(root / "raw", folds=1, tiles=4, seed=1, size=64, empty_fraction=0.0)
    prepare(root / "raw", root / "store")
    return root / "store"


def test_predict_out_keeps_the_users_geojson_and_replaces_its_own(nuclei_run, tmp_path):
    from cellbench.data.store import open_fold

    image = tmp_path / "tile.png"
    Image.fromarray(np.asarray(open_fold(nuclei_run.store, 3).images[0])).save(image)
    hand = _user_file(tmp_path / "tile.geojson")  # hand annotations next to the image
    args = ["predict", "--run", "dig", "--runs-dir", str(nuclei_run.runs), str(image)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    _refused(result, hand)
    assert hand.read_bytes() == USER and not (tmp_path / "tile.overlay.png").exists()

    out = tmp_path / "preds"
    first = runner.invoke(app, [*args, "--out", str(out)])
    assert first.exit_code == 0, first.output[-2000:]
    again = runner.invoke(app, [*args, "--out", str(out)])  # its own files: replaced
    assert again.exit_code == 0, again.output[-2000:]
    edited = out / "tile.geojson"
    edited.write_text(edited.read_text().replace('"features"', '"note": "mine", "features"'))
    _refused(runner.invoke(app, [*args, "--out", str(out)]), edited)  # a user's edit: kept
    assert "mine" in edited.read_text()

    forced = runner.invoke(app, [*args, "--out", str(tmp_path), "--overwrite"])
    assert forced.exit_code == 0, forced.output[-2000:]
    assert json.loads(hand.read_text())["type"] == "FeatureCollection"

    inside_run = nuclei_run.run.root  # a run's own folder, --overwrite or not
    refused = runner.invoke(app, [*args, "--out", str(inside_run), "--overwrite"])
    assert refused.exit_code == 4 and "own files" in refused.stderr


def test_eval_export_never_inside_a_store(nuclei_run, tmp_path):
    copy = nuclei_run.copy(tmp_path)
    target = nuclei_run.store / "preds"
    result = runner.invoke(
        app,
        ["eval", "--run", "dig", "--runs-dir", str(copy.runs), "--split", "test"]
        + ["--export", str(target)],
    )
    _refused(result, target)
    assert "data store" in result.stderr and not target.exists()


def test_eval_pannuke_csv_refuses_a_users_file_and_a_stores_manifest(store, tmp_path):
    base = ["eval", "pannuke", "--true", str(store / "fold1"), "--pred", str(store / "fold1")]
    mine = _user_file(tmp_path / "scores.csv")
    _refused(runner.invoke(app, [*base, "--csv", str(mine)]), mine)
    assert mine.read_bytes() == USER

    manifest = store / "manifest.json"
    before = manifest.read_bytes()
    result = runner.invoke(app, [*base, "--csv", str(manifest), "--overwrite"])
    _refused(result, manifest)
    assert manifest.read_bytes() == before

    ours = tmp_path / "new.csv"
    for extra in ([], []):  # written, then replaced: it is cellbench's own
        assert runner.invoke(app, [*base, "--csv", str(ours), *extra]).exit_code == 0
    assert outputs.written_by_cellbench(ours)
    forced = runner.invoke(app, [*base, "--csv", str(mine), "--overwrite"])
    assert forced.exit_code == 0 and mine.read_bytes() != USER


def test_data_stats_plot(store, tmp_path):
    mine = _user_file(tmp_path / "figure.png")
    _refused(runner.invoke(app, ["data", "stats", str(store), "--plot", str(mine)]), mine)
    assert mine.read_bytes() == USER
    inside = store / "stats.png"
    _refused(runner.invoke(app, ["data", "stats", str(store), "--plot", str(inside)]), inside)
    assert not inside.exists()
    ok = runner.invoke(app, ["data", "stats", str(store), "--plot", str(mine), "--overwrite"])
    assert ok.exit_code == 0 and mine.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_compare_plot(tmp_path):
    runs = RunStore(tmp_path / "runs")
    first, _ = make_run(runs, "a"), make_run(runs, "b")
    mine = _user_file(tmp_path / "curves.png")
    base = ["runs", "compare", "a", "b", "--runs-dir", str(runs.root)]
    _refused(runner.invoke(app, [*base, "--plot", str(mine)]), mine)
    assert mine.read_bytes() == USER
    own = first.root / "curves.png"  # among the run's own files
    _refused(runner.invoke(app, [*base, "--plot", str(own), "--overwrite"]), own)
    fresh = tmp_path / "plots" / "curves.png"
    assert runner.invoke(app, [*base, "--plot", str(fresh)]).exit_code == 0
    assert runner.invoke(app, [*base, "--plot", str(fresh)]).exit_code == 0  # its own: replaced


def test_sweep_never_writes_its_leaderboard_into_a_users_folder(tmp_path):
    folder = tmp_path / "sweeps" / "study"
    mine = _user_file(folder / "leaderboard.csv")
    result = runner.invoke(
        app,
        ["sweep", "--profile", "demo", "--grid", "train.lr=0.1,0.2", "--name", "study"]
        + ["--set", f"data.path={tmp_path}", "--runs-dir", str(tmp_path / "runs")],
    )
    _refused(result, folder)
    assert mine.read_bytes() == USER and sorted(p.name for p in folder.iterdir()) == [mine.name]
    assert not (tmp_path / "runs").exists()


def test_data_synth_and_prepare_out_never_inside_a_store(store, tmp_path):
    raw = tmp_path / "raw-inside"
    for args in (
        ["data", "synth", "--out", str(store / "fold1" / "raw"), "--tiles", "2"],
        ["data", "prepare", "--pannuke", str(raw), "--out", str(store / "again")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 4, result.output
        assert "inside the data store" in result.stderr
    assert not (store / "fold1" / "raw").exists() and not (store / "again").exists()
