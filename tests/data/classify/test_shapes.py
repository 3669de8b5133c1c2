import hashlib

import numpy as np
import pytest
from PIL import Image

from cellbench.data.classify import write_shapes_dataset
from cellbench.errors import BadInputError, UsageError


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_shapes_dataset(tmp_path / "a", n_per_class=5, image_size=16, seed=7)
    b = write_shapes_dataset(tmp_path / "b", n_per_class=5, image_size=16, seed=7)
    c = write_shapes_dataset(tmp_path / "c", n_per_class=5, image_size=16, seed=8)
    assert _digest(a.root) == _digest(b.root) != _digest(c.root)
    assert a.counts == {"all": {"circle": 5, "square": 5, "triangle": 5, "cross": 5}}


def test_images_vary_in_pose_and_colour(tmp_path):
    ds = write_shapes_dataset(tmp_path / "d", classes=("square",), n_per_class=6, image_size=24)
    images = [np.asarray(Image.open(p)) for p in sorted((ds.root / "square").glob("*.png"))]
    assert all(img.shape == (24, 24, 3) and img.dtype == np.uint8 for img in images)
    assert len({img.tobytes() for img in images}) == 6
    assert np.std([img.mean() for img in images]) > 1.0


def test_split_layout_and_odd_modes(tmp_path):
    ds = write_shapes_dataset(tmp_path / "s", classes=("circle", "star"), n_per_class=20,
                              image_size=16, layout="split", odd_modes=True)  # fmt: skip
    assert sorted(p.name for p in ds.root.iterdir() if p.is_dir()) == ["test", "train", "val"]
    assert ds.counts["train"]["star"] + ds.counts["val"]["star"] + ds.counts["test"]["star"] == 20
    modes = [Image.open(p).mode for p in ds.root.rglob("*.png")]
    assert modes.count("L") == 2 and modes.count("RGBA") == 2 and ds.odd_modes == 4


def test_rewrite_is_a_no_op_and_foreign_folders_are_refused(tmp_path):
    first = write_shapes_dataset(tmp_path / "x", n_per_class=2, image_size=16)
    again = write_shapes_dataset(tmp_path / "x", n_per_class=2, image_size=16)
    assert first.created and not again.created
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not this shapes dataset"):
        write_shapes_dataset(tmp_path / "y", n_per_class=2, image_size=16)
    assert (tmp_path / "y" / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="unknown shape"):
        write_shapes_dataset(tmp_path / "z", classes=("blob",))
