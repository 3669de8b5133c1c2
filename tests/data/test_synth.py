"""The generated PanNuke-like dataset: layout, determinism, realism checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.families import TISSUES
from cellbench.data.pannuke import open_raw_fold
from cellbench.data.synth import MARKER, STYLES, synth, synth_tile, tissue_profile


def test_raw_layout_dtypes_and_ranges(raw_master):
    raw = open_raw_fold(raw_master, 1)
    assert raw.files.layout == "official"
    assert raw.images.dtype == np.float64 and raw.images.shape == (6, 64, 64, 3)
    assert raw.masks.dtype == np.float64 and raw.masks.shape == (6, 64, 64, 6)
    assert raw.images.min() >= 0 and raw.images.max() <= 255
    nucleus = (raw.masks[..., :5] > 0).any(-1)
    assert ((raw.masks[..., 5] == 1) == ~nucleus).all()  # background channel consistent


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth(tmp_path / name, folds=1, tiles=2, seed=seed, size=32, layout="flat")
    a, b, c = (np.load(tmp_path / n / "fold1" / "images.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_all_tissues_in_a_fold_of_19_tiles(tmp_path):
    synth(tmp_path / "d", folds=1, tiles=19, seed=0, size=16, layout="flat")
    assert sorted(np.load(tmp_path / "d" / "fold1" / "types.npy").tolist()) == sorted(TISSUES)


def test_nucleus_types_differ_in_size_and_stain():
    areas = {k: [] for k in range(5)}
    darkness = {k: [] for k in range(5)}
    for i in range(12):
        image, masks = synth_tile(np.random.default_rng(i), "Colon", 256)
        grey = image.mean(-1)
        for k in range(5):
            ids = np.unique(masks[..., k][masks[..., k] > 0])
            for j in ids:
                m = masks[..., k] == j
                areas[k].append(m.sum())
                darkness[k].append(255 - grey[m].mean())
    median = {k: np.median(v) for k, v in areas.items() if v}
    assert median[0] > median[4] > median[1]  # neoplastic > epithelial > inflammatory
    assert np.median(darkness[1]) > np.median(darkness[4])  # inflammatory darker than epithelial
    assert STYLES[2].aspect[1] < 0.5  # connective nuclei are elongated by construction


def test_type_mix_depends_on_tissue():
    assert not np.allclose(tissue_profile("Lung").mix, tissue_profile("Breast").mix)


def test_empty_tiles_exist():
    image, masks = synth_tile(np.random.default_rng(0), "Skin", 64, empty=True)
    assert masks[..., :5].max() == 0 and (masks[..., 5] == 1).all()


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    runner = CliRunner()
    args = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--folds",
        "1",
        "--tiles",
        "1",
        "--size",
        "32",
    ]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


@pytest.mark.parametrize("bad", [["--tiles", "0"], ["--layout", "weird"]])
def test_cli_bad_options(tmp_path, bad):
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), *bad])
    assert result.exit_code == 2


def _synth_cli(out, *extra: str):
    args = ["data", "synth", "--out", str(out), "--folds", "1", "--tiles", "1", "--size", "32"]
    return CliRunner().invoke(app, [*args, *extra])


def test_force_replaces_only_a_folder_synth_wrote(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = _synth_cli(mine, "--force")
    assert refused.exit_code == 3 and str(mine) in refused.stderr and "synth.json" in refused.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging left behind

    ours = tmp_path / "ours"
    assert _synth_cli(ours).exit_code == 0
    marker = json.loads((ours / MARKER).read_text())
    assert marker["generator"] == "cellbench-synth-pannuke"
    assert {k: marker[k] for k in ("folds", "tiles", "seed", "size", "layout")} == {
        "folds": 1,
        "tiles": 1,
        "seed": 0,
        "size": 32,
        "layout": "official",
    }
    assert _synth_cli(ours, "--force", "--seed", "1").exit_code == 0
    assert json.loads((ours / MARKER).read_text())["seed"] == 1


def test_refuses_the_current_directory_without_leaving_a_staging_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = _synth_cli(".")
    assert result.exit_code == 2 and "current directory" in result.stderr
    assert list(tmp_path.iterdir()) == [work] and not any(work.iterdir())


def test_fold_files_are_complete_npy_files(tmp_path):
    synth(tmp_path / "f", folds=1, tiles=3, seed=1, size=32, layout="flat")
    images = np.load(tmp_path / "f" / "fold1" / "images.npy")
    masks = np.load(tmp_path / "f" / "fold1" / "masks.npy")
    assert images.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32, 6)
    assert images.dtype == masks.dtype == np.float64
    # Tile 2 is exactly what synth_tile draws from the (seed, fold, tile) generator.
    tissues = np.load(tmp_path / "f" / "fold1" / "types.npy").tolist()
    rng = np.random.default_rng([1, 1, 2])
    image, mask = synth_tile(rng, tissues[2], 32, empty=rng.random() < 0.04)
    assert np.array_equal(images[2], image) and np.array_equal(masks[2], mask)


def test_marker_lists_the_files_synth_wrote(tmp_path):
    out = tmp_path / "raw"
    assert _synth_cli(out, "--layout", "flat").exit_code == 0
    listed = json.loads((out / MARKER).read_text())["files"]
    assert listed == ["fold1/images.npy", "fold1/masks.npy", "fold1/types.npy"]


def test_force_refuses_a_synth_folder_holding_a_user_file(tmp_path):
    out = tmp_path / "raw"
    assert _synth_cli(out).exit_code == 0
    notes = out / "Fold 1" / "my_notes.txt"
    notes.write_text("keep me")
    refused = _synth_cli(out, "--force")
    assert refused.exit_code == 3 and f"{notes}: not written by data synth" in refused.stderr
    assert notes.read_text() == "keep me"


def test_force_refuses_a_shapes_folder_holding_a_user_file(tmp_path):
    out = tmp_path / "shapes"
    args = ["data", "synth", "--kind", "shapes", "--out", str(out), "--tiles", "2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    mine = out / "circle" / "my_photo.jpg"
    mine.write_bytes(b"jpg")
    refused = CliRunner().invoke(app, [*args, "--seed", "1", "--force"])
    assert refused.exit_code == 3 and str(mine) in refused.stderr
    assert mine.read_bytes() == b"jpg"
    mine.unlink()
    assert CliRunner().invoke(app, [*args, "--seed", "1", "--force"]).exit_code == 0


def test_an_out_below_a_file_names_the_file(tmp_path):
    blocking = tmp_path / "afile"
    blocking.write_text("mine")
    result = _synth_cli(blocking / "sub")
    assert result.exit_code == 3 and f"{blocking}: a file, not a folder" in result.stderr
    assert blocking.read_text() == "mine"
