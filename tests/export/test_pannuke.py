"""PanNuke-format export: the masks read back (by the PanNuke reader and converter that
``data prepare`` and ``eval pannuke`` use) give the same nuclei, types and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellbench.data.convert import convert_masks
from cellbench.data.pannuke import check_mask_header, read_tissues
from cellbench.data.perturb import perturb_tiles
from cellbench.errors import UsageError
from cellbench.export.pannuke import MARKER, pannuke_export
from cellbench.metrics.nuclei import score_set
from tests.metrics.conftest import generated_maps


def _export(out: Path, inst, types, tissues) -> None:
    with pannuke_export(out, tissues, *inst.shape[1:], info={"run": "test"}) as writer:
        for i in range(len(inst)):
            writer.write(inst[i], types[i])


def test_export_reads_back_to_the_same_scores(tmp_path):
    true_inst, true_types, tissues = generated_maps(6, 64, seed=2)
    pred_inst, pred_types = perturb_tiles(true_inst, true_types, seed=1)
    out = tmp_path / "pred"
    _export(out, pred_inst, pred_types, tissues)
    masks = np.load(out / "masks.npy", mmap_mode="r")
    assert masks.dtype == np.float64 and masks.shape == (6, 64, 64, 6)
    check_mask_header(out / "masks.npy", masks, (6, 64, 64, 3))
    assert read_tissues(out / "types.npy", expected=6) == list(tissues)
    back_inst, back_types, quirks = convert_masks(masks, out / "masks.npy")
    assert quirks.overlap_pixels == 0 and quirks.background_mismatch_pixels == 0
    direct = score_set(true_inst, true_types, pred_inst, pred_types, tissues).to_dict()
    reread = score_set(true_inst, true_types, back_inst, back_types, tissues).to_dict()
    assert reread == direct
    assert direct["bPQ"] < 1.0  # the perturbation mattered: the test compares real scores


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
    with pytest.raises(UsageError, match="no cellbench export"):
        _export(foreign, inst, types, tissues)
    assert (foreign / "notes.txt").read_text() == "keep me"
