"""Label folds for scoring: both PanNuke layouts and the store, the PanNuke writer, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.data.nuclei_labels import (
    PanNukeWriter,
    check_pair,
    open_labels,
    pannuke_masks,
    write_pannuke,
)
from cellbench.data.perturb import perturb_tiles
from cellbench.data.prepare import prepare
from cellbench.data.store import open_fold
from cellbench.data.synth import synth
from cellbench.errors import BadInputError, UsageError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    synth(root / "raw", folds=2, tiles=5, seed=4, size=64)
    prepare(root / "raw", root / "store", folds=[1, 2])
    return root


def test_every_layout_reads_the_same_labels(data):
    official = open_labels(data / "raw" / "Fold 1")[None]
    root = open_labels(data / "raw", [1])[1]
    store = open_labels(data / "store")[1]
    store_fold = open_labels(data / "store" / "fold1")[None]
    assert official.kind == root.kind == "pannuke" and store.kind == store_fold.kind == "store"
    assert official.shape == store.shape == (5, 64, 64)
    assert official.tissues == store.tissues
    a, b = official.read(1, 4), store_fold.read(1, 4)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert a[0].dtype == np.int32 and a[1].dtype == np.uint8
    assert sorted(open_labels(data / "raw")) == [1, 2]


def test_written_predictions_read_back_identical(data, tmp_path):
    fold = open_fold(data / "store", 2)
    inst, types = perturb_tiles(fold.inst, fold.types, seed=1)
    masks = write_pannuke(tmp_path / "pred", inst, types, fold.tissues, chunk=2)
    assert masks.is_file() and sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "masks.npy",
        "types.npy",
    ]
    back = open_labels(tmp_path / "pred")[None]
    assert back.tissues == tuple(fold.tissues) and back.shape == inst.shape
    got_inst, got_types = back.read(0, len(back))
    for i in range(len(inst)):  # same nuclei (ids may be renumbered), same types
        pairs = {(a, b) for a, b in zip(inst[i].ravel(), got_inst[i].ravel(), strict=True)}
        assert len(pairs) == len(np.unique(inst[i])) == len(np.unique(got_inst[i]))
    assert (got_types == types).all()
    raw = np.load(masks)
    assert raw.shape == (*inst.shape, 6) and raw.dtype == np.float64
    assert ((raw[..., 5] == 1) == (inst == 0)).all()


def test_writer_leaves_nothing_on_error(tmp_path):
    inst = np.zeros((2, 8, 8), np.int32)
    tissues = ["Breast", "Colon"]
    with (
        pytest.raises(ValueError, match="rows written"),
        PanNukeWriter(tmp_path / "p", tissues, (2, 8, 8)) as out,
    ):
        out.write(inst[:1], inst[:1].astype(np.uint8))  # one tile short
    with pytest.raises(RuntimeError), PanNukeWriter(tmp_path / "q", tissues, (2, 8, 8)):
        raise RuntimeError("interrupted")
    assert not list((tmp_path / "p").iterdir()) and not list((tmp_path / "q").iterdir())


def test_untyped_nuclei_cannot_be_written_as_pannuke():
    inst = np.zeros((1, 8, 8), np.int32)
    inst[0, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="without a type"):
        pannuke_masks(inst, np.zeros_like(inst, np.uint8))


def _flat(tmp_path, masks, tissues, name="pred"):
    folder = tmp_path / name
    folder.mkdir()
    np.save(folder / "masks.npy", masks)
    np.save(folder / "types.npy", np.array(tissues))
    return folder


def test_bad_prediction_files_name_the_file(data, tmp_path):
    true = open_labels(data / "raw" / "Fold 1")[None]
    masks = np.load(true.labels)
    tissues = list(true.tissues)
    five = _flat(tmp_path, masks[..., :5], tissues, "five")
    with pytest.raises(BadInputError, match=r"five/masks.npy: .*expected \(N, H, W, 6\)"):
        open_labels(five)
    fewer = open_labels(_flat(tmp_path, masks[:3], tissues[:3], "fewer"))[None]
    with pytest.raises(BadInputError, match=r"fewer/masks.npy: 3 tiles of 64x64, but .* 5 tiles"):
        check_pair(true, fewer)
    other = open_labels(_flat(tmp_path, masks, tissues[::-1], "other"))[None]
    with pytest.raises(BadInputError, match="other/types.npy: tile 0 is"):
        check_pair(true, other)
    negative = masks.copy()
    negative[0, 0, 0, 0] = -3
    bad = open_labels(_flat(tmp_path, negative, tissues, "negative"))[None]
    with pytest.raises(BadInputError, match="negative/masks.npy: negative instance ids"):
        bad.read(0, 5)
    fraction = masks.copy()
    fraction[0, 0, 0, 0] = 1.5
    bad = open_labels(_flat(tmp_path, fraction, tissues, "fraction"))[None]
    with pytest.raises(BadInputError, match="fraction/masks.npy: fractional instance ids"):
        bad.read(0, 5)
    truncated = _flat(tmp_path, masks, tissues, "truncated")
    data_bytes = (truncated / "masks.npy").read_bytes()
    (truncated / "masks.npy").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(BadInputError, match="truncated/masks.npy: truncated"):
        open_labels(truncated)
    (truncated / "masks.npy").unlink()
    (truncated / "types.npy").unlink()
    with pytest.raises(BadInputError, match="truncated: no masks.npy"):
        open_labels(truncated)
    missing_types = _flat(tmp_path, masks, tissues, "notypes")
    (missing_types / "types.npy").unlink()
    with pytest.raises(BadInputError, match="notypes/types.npy: file not found"):
        open_labels(missing_types)
    with pytest.raises(BadInputError, match="nowhere: no such folder"):
        open_labels(tmp_path / "nowhere")


def test_folds_choice(data):
    with pytest.raises(BadInputError, match="fold 3 not found"):
        open_labels(data / "store", [3])
    with pytest.raises(UsageError, match="--folds"):
        open_labels(data / "raw" / "Fold 1", [1])
