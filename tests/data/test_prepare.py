"""``data prepare``: layouts, idempotence, --force, bad input, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.store import open_fold, store_folds
from cellbench.data.synth import synth
from cellbench.data.targets import hv_maps

from .conftest import write_flat_fold

runner = CliRunner()


def _prepare(raw: Path, out: Path, *extra: str):
    return runner.invoke(app, ["data", "prepare", "--pannuke", str(raw), "--out", str(out), *extra])


def test_synth_prepare_check_pipeline(tmp_path):
    raw, store = tmp_path / "raw", tmp_path / "store"
    synth = runner.invoke(app, ["data", "synth", "--out", str(raw), "--tiles", "4", "--size", "64"])
    assert synth.exit_code == 0, synth.output
    result = _prepare(raw, store)
    assert result.exit_code == 0, result.output
    assert "prepared" in result.stdout
    check = runner.invoke(app, ["data", "check", str(store), "--json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["kind"] == "store" and report["ok"] and report["tiles"] == 12
    raw_check = runner.invoke(app, ["data", "check", str(raw)])
    assert raw_check.exit_code == 0 and "ok" in raw_check.stdout


def test_store_contract(store_master):
    f = open_fold(store_master, 2)
    assert f.images.dtype == np.uint8 and f.images.shape == (6, 64, 64, 3)
    assert f.inst.dtype == np.int32 and f.types.dtype == np.uint8 and f.hv.dtype == np.float32
    assert f.hv.shape == (6, 2, 64, 64) and np.abs(f.hv).max() <= 1
    np.testing.assert_array_equal(f.hv, hv_maps(np.asarray(f.inst)))
    for tile in f.inst:  # ids compact per tile
        ids = np.unique(tile[tile > 0])
        assert ids.tolist() == list(range(1, len(ids) + 1))
    m = f.manifest
    assert m["format"] == "cellbench-nuclei-store" and m["tiles"] == 6
    assert set(m["sources"]) == {"images", "masks", "types"}
    assert all(len(s["sha256"]) == 64 for s in m["sources"].values())
    assert m["arrays"]["hv"]["dtype"] == "float32" and m["cellbench_version"]
    assert sum(m["counts"]["per_type"].values()) == m["counts"]["nuclei"]
    root = json.loads((store_master / "manifest.json").read_text())
    assert sorted(root["folds"]) == ["1", "2", "3"]


def test_idempotent_unless_forced_or_sources_change(raw_dir, tmp_path):
    out = tmp_path / "store"
    assert _prepare(raw_dir, out, "--folds", "1", "2").exit_code == 0
    before = (out / "fold1" / "manifest.json").read_text()
    again = _prepare(raw_dir, out, "--folds", "1,2")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert (out / "fold1" / "manifest.json").read_text() == before
    forced = _prepare(raw_dir, out, "--folds", "1", "--force", "--json")
    assert [r["status"] for r in json.loads(forced.stdout)["folds"]] == ["prepared"]
    # Same bytes, new mtime: the sha256 decides, nothing to do.
    images = raw_dir / "Fold 2" / "images" / "fold2" / "images.npy"
    images.write_bytes(images.read_bytes())
    same = _prepare(raw_dir, out, "--folds", "2", "--json")
    assert [r["status"] for r in json.loads(same.stdout)["folds"]] == ["up to date"]
    # Changed content: re-prepared.
    arr = np.load(images)
    arr[0, 0, 0, 0] = 255 - arr[0, 0, 0, 0]
    np.save(images, arr)
    changed = _prepare(raw_dir, out, "--folds", "2", "--json")
    assert [r["status"] for r in json.loads(changed.stdout)["folds"]] == ["prepared"]


def test_flat_and_official_layouts_give_the_same_store(raw_master, tmp_path):
    flat = tmp_path / "flat"
    for fold in (1, 2, 3):
        base = raw_master / f"Fold {fold}"
        write_flat_fold(
            flat,
            fold,
            np.load(base / "images" / f"fold{fold}" / "images.npy"),
            np.load(base / "masks" / f"fold{fold}" / "masks.npy"),
            np.load(base / "images" / f"fold{fold}" / "types.npy"),
        )
    assert _prepare(raw_master, tmp_path / "a", "--folds", "3").exit_code == 0
    assert _prepare(flat, tmp_path / "b", "--folds", "3").exit_code == 0
    for name in ("images", "inst", "types", "hv"):
        a = np.load(tmp_path / "a" / "fold3" / f"{name}.npy")
        assert np.array_equal(a, np.load(tmp_path / "b" / "fold3" / f"{name}.npy"))


def _fold1(raw: Path) -> tuple[Path, Path, Path]:
    images = raw / "Fold 1" / "images" / "fold1"
    return (
        images / "images.npy",
        raw / "Fold 1" / "masks" / "fold1" / "masks.npy",
        images / "types.npy",
    )


def _five_channels(raw):
    _, masks, _ = _fold1(raw)
    np.save(masks, np.load(masks)[..., :5])
    return masks, "5 channels"


def _nan_image(raw):
    images, _, _ = _fold1(raw)
    arr = np.load(images)
    arr[3, 10, 10, 1] = np.nan
    np.save(images, arr)
    return images, "NaN or inf in image of tile 3"


def _types_length(raw):
    _, _, types = _fold1(raw)
    np.save(types, np.load(types)[:-1])
    return types, "5 tissue names for 6 images"


def _truncated(raw):
    _, masks, _ = _fold1(raw)
    data = masks.read_bytes()
    masks.write_bytes(data[: len(data) // 2])
    return masks, "truncated"


def _missing_fold(raw):
    # a fold folder without its masks (a fold absent altogether is simply not converted)
    masks = raw / "Fold 2" / "masks" / "fold2" / "masks.npy"
    masks.unlink()
    return masks, "missing file of fold 2"


def _int8_images(raw):
    images, _, _ = _fold1(raw)
    np.save(images, np.load(images).astype(np.int8))
    return images, "int8"


def _no_tile(raw):
    images, masks, types = _fold1(raw)
    np.save(images, np.load(images)[:0])
    np.save(masks, np.load(masks)[:0])
    np.save(types, np.load(types)[:0])
    return images, "the fold holds no tile"


def _unknown_tissue(raw):
    _, _, types = _fold1(raw)
    names = np.load(types).astype("<U20")
    names[2] = "Brain"
    np.save(types, names)
    return types, "unknown tissue name 'Brain'"


@pytest.mark.parametrize(
    "corrupt",
    [
        _five_channels,
        _nan_image,
        _types_length,
        _truncated,
        _missing_fold,
        _int8_images,
        _no_tile,
        _unknown_tissue,
    ],
)
def test_bad_input_exits_3_with_one_line_and_no_complete_looking_output(raw_dir, tmp_path, corrupt):
    path, problem = corrupt(raw_dir)
    out = tmp_path / "store"
    result = _prepare(raw_dir, out)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and problem in lines[0]
    # Fold 1 (or 2) is bad: no fold folder may look complete, no staging folder may remain,
    # and a store folder this prepare created is not left behind empty.
    assert not out.exists()


def test_failure_in_a_later_fold_keeps_earlier_complete_folds_only(raw_dir, tmp_path):
    images = raw_dir / "Fold 3" / "images" / "fold3" / "images.npy"
    arr = np.load(images)
    arr[5, 0, 0, 0] = np.inf  # found only while converting fold 3's last chunk
    np.save(images, arr)
    out = tmp_path / "store"
    result = _prepare(raw_dir, out, "--chunk", "2")
    assert result.exit_code == 3 and "tile 5" in result.stderr
    assert store_folds(out) == [1, 2]
    assert not (out / "fold3").exists() and not list(out.glob(".fold3.*"))
    assert sorted(json.loads((out / "manifest.json").read_text())["folds"]) == ["1", "2"]


def test_bad_folds_option(raw_dir, tmp_path):
    result = _prepare(raw_dir, tmp_path / "s", "--folds", "x")
    assert result.exit_code == 2 and "--folds" in result.stderr


def test_refuses_an_out_that_is_not_a_store(raw_master, raw_dir, tmp_path):
    # A raw PanNuke copy as --out: its fold1/masks.npy must not be replaced.
    masks = raw_dir / "Fold 1" / "masks" / "fold1" / "masks.npy"
    before = masks.read_bytes()
    result = _prepare(raw_master, raw_dir)
    assert result.exit_code == 3 and "raw PanNuke dataset" in result.stderr
    assert masks.read_bytes() == before
    # A folder whose fold1/ is someone else's.
    foreign = tmp_path / "foreign"
    (foreign / "fold1").mkdir(parents=True)
    (foreign / "fold1" / "notes.txt").write_text("keep me")
    result = _prepare(raw_master, foreign)
    assert result.exit_code == 3 and str(foreign / "fold1") in result.stderr
    assert sorted(p.name for p in foreign.rglob("*")) == ["fold1", "notes.txt"]
    # A manifest.json that is not a store's.
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "my project"}')
    result = _prepare(raw_master, other)
    assert result.exit_code == 3 and "manifest.json" in result.stderr
    assert sorted(p.name for p in other.iterdir()) == ["manifest.json"]


def test_manifests_list_exactly_the_files_prepare_wrote(store_dir):
    from cellbench.ownership import owned_files

    for fold in store_folds(store_dir):
        folder = store_dir / f"fold{fold}"
        listed = json.loads((folder / "manifest.json").read_text())["files"]
        assert listed == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    assert json.loads((store_dir / "manifest.json").read_text())["files"] == []
    assert owned_files(store_dir) == {p for p in store_dir.rglob("*") if p.is_file()}


def test_refuses_a_non_empty_folder_that_is_not_a_store(raw_master, tmp_path):
    out = tmp_path / "proj"
    (out / "images").mkdir(parents=True)
    (out / "images" / "slide1.png").write_bytes(b"png")
    result = _prepare(raw_master, out, "--folds", "1")
    assert result.exit_code == 3
    assert (
        f"{out}: folder is not empty and is not a cellbench store (holds images)" in result.stderr
    )
    assert sorted(p.name for p in out.rglob("*")) == ["images", "slide1.png"]
    # an empty folder, or one left with only the staging folder of a killed prepare, is fine
    leftover = tmp_path / "killed"
    (leftover / ".fold1.tmp-999999999").mkdir(parents=True)
    assert _prepare(raw_master, leftover, "--folds", "1").exit_code == 0
    assert store_folds(leftover) == [1] and not (leftover / ".fold1.tmp-999999999").exists()


def test_refuses_to_replace_a_store_fold_holding_a_user_file(raw_master, store_dir):
    notes = store_dir / "fold1" / "my_notes.txt"
    notes.write_text("keep me")
    result = _prepare(raw_master, store_dir, "--folds", "1", "--force")
    assert result.exit_code == 3 and f"{notes}: not written by cellbench" in result.stderr
    assert notes.read_text() == "keep me"
    # the user's file next to the folds (not inside one) is no obstacle
    notes.rename(store_dir / "my_notes.txt")
    assert _prepare(raw_master, store_dir, "--folds", "1", "--force").exit_code == 0
    assert (store_dir / "my_notes.txt").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_prepare_leaves_no_complete_looking_fold(tmp_path_factory, signum):
    raw = tmp_path_factory.mktemp("signal-raw") / "pannuke"
    synth(raw, folds=3, tiles=6, seed=3, size=256)
    out = tmp_path_factory.mktemp("signal-out") / "store"
    argv = [sys.executable, "-m", "cellbench", "data", "prepare", "--pannuke", str(raw)]
    proc = subprocess.Popen(
        [*argv, "--out", str(out), "--chunk", "1"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        # signal while a fold is being built (its staging folder exists)
        while not list(out.parent.glob(".fold*.tmp-*")) + list(out.glob(".fold*.tmp-*")):
            assert proc.poll() is None, f"prepare ended first: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, proc.stderr.read()[-2000:]
    assert not list(out.glob(".fold*")), "a staging folder was left behind"
    for manifest in out.glob("fold*/manifest.json"):  # folds finished before the signal
        fold = manifest.parent
        assert json.loads(manifest.read_text())["tiles"] == 6
        assert np.load(fold / "images.npy", mmap_mode="r").shape[0] == 6
    assert not (out / "fold3" / "manifest.json").exists()


def test_without_folds_converts_the_folds_found(raw_dir, tmp_path):
    import shutil

    shutil.rmtree(raw_dir / "Fold 2")
    shutil.rmtree(raw_dir / "Fold 3")  # the user downloaded Fold 1 only
    out = tmp_path / "only1"
    result = _prepare(raw_dir, out, "--json")
    assert result.exit_code == 0, result.output
    assert [r["fold"] for r in json.loads(result.stdout)["folds"]] == [1]
    assert store_folds(out) == [1]
    named = _prepare(raw_dir, tmp_path / "named", "--folds", "1", "2")
    assert named.exit_code == 3 and "fold 2 not found" in named.stderr
    assert not (tmp_path / "named").exists()  # a named fold missing: nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = _prepare(empty, tmp_path / "none")
    assert nothing.exit_code == 3 and "no PanNuke fold found" in nothing.stderr
