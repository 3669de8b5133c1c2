"""PanNuke-format export: ``cellbench eval pannuke`` re-scores it to the same numbers, and an
interrupted export or a user's folder is never left half-written or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.nuclei_labels import write_pannuke
from cellbench.data.perturb import perturb_tiles
from cellbench.errors import RunConflict
from cellbench.metrics.nuclei import score_set
from cellbench.tasks.nuclei.export.pannuke import MARKER, pannuke_export
from tests.metrics.conftest import generated_maps


def _export(out: Path, inst, types, tissues, truth=None) -> None:
    shape = inst.shape[1:]
    with pannuke_export(out, tissues, *shape, {"run": "test"}, with_truth=truth is not None) as w:
        for i in range(len(inst)):
            w.write(inst[i], types[i], *(() if truth is None else (truth[0][i], truth[1][i])))


def test_eval_pannuke_rescores_the_export_to_identical_numbers(tmp_path):
    true_inst, true_types, tissues = generated_maps(6, 64, seed=2)
    pred_inst, pred_types = perturb_tiles(true_inst, true_types, seed=1)
    out = tmp_path / "export"
    _export(out, pred_inst, pred_types, tissues, truth=(true_inst, true_types))
    assert json.loads((out / MARKER).read_text())["run"] == "test"
    write_pannuke(tmp_path / "true", true_inst, true_types, list(tissues))
    result = CliRunner().invoke(
        app, ["eval", "pannuke", "--true", str(out / "true"), "--pred", str(out / "pred"), "--json"]
    )
    assert result.exit_code == 0, result.output
    rescored = json.loads(result.stdout)
    direct = score_set(true_inst, true_types, pred_inst, pred_types, tissues).to_dict()
    for key in ("bPQ", "mPQ", "bPQ_image_avg", "mPQ_image_avg", "mPQ_plus", "dice", "aji"):
        assert rescored[key] == direct[key], key
    assert rescored["per_type"] == direct["per_type"]
    assert rescored["per_tissue"] == direct["per_tissue"]
    assert direct["bPQ"] < 1.0  # the perturbation mattered: the test compares real scores
    # the ground truth it carries is the one given
    for name in ("masks.npy", "types.npy"):
        assert (out / "true" / name).read_bytes() == (tmp_path / "true" / name).read_bytes()


def test_an_interrupted_export_leaves_nothing_and_a_foreign_folder_is_refused(tmp_path):
    inst, types, tissues = generated_maps(3, 32, seed=4)
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError), pannuke_export(out, tissues, 32, 32) as writer:
        writer.write(inst[0], types[0])
        raise RuntimeError("killed mid-export")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # too few tiles: not published
    with pytest.raises(ValueError, match="rows written"), pannuke_export(out, tissues, 32, 32) as w:
        w.write(inst[0], types[0])
    assert not out.exists()

    _export(out, inst, types, tissues)
    assert (out / MARKER).is_file()
    _export(out, inst, types, tissues)  # our own export is replaced

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RunConflict, match="no cellbench export"):
        _export(foreign, inst, types, tissues)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "added", ["notes.txt", "pred/mine.npy", "true/extra.csv", "figures/plot.png"]
)
def test_replacing_an_export_never_deletes_a_file_the_user_put_in_it(tmp_path, added):
    """An export folder the user added a file to used to be replaced whole, the file gone."""
    inst, types, tissues = generated_maps(2, 32, seed=5)
    out = tmp_path / "export"
    _export(out, inst, types, tissues, truth=(inst, types))
    (out / added).parent.mkdir(parents=True, exist_ok=True)
    (out / added).write_text("keep me")
    with pytest.raises(RunConflict, match=added.split("/")[0]):
        _export(out, inst, types, tissues, truth=(inst, types))
    assert (out / added).read_text() == "keep me"


def test_a_folder_whose_marker_is_not_ours_is_refused(tmp_path):
    inst, types, tissues = generated_maps(2, 32, seed=5)
    out = tmp_path / "export"
    out.mkdir()
    (out / MARKER).write_text('{"torn')
    (out / "pred").mkdir()
    (out / "pred" / "masks.npy").write_text("the user's own masks")
    with pytest.raises(RunConflict, match="not a cellbench export marker"):
        _export(out, inst, types, tissues)
    assert (out / "pred" / "masks.npy").read_text() == "the user's own masks"
