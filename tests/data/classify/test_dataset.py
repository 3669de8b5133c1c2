import shutil

import pytest
import torch

from cellbench.data.classify import build_classification_data, write_shapes_dataset
from cellbench.data.classify.transforms import RandomRot90
from cellbench.errors import BadInputError

from .conftest import config


def test_build_gives_normalized_tensors_and_counts(shapes_flat):
    data = build_classification_data(config(shapes_flat, image_size=24))
    image, label = data.train[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert isinstance(label, int) and data.num_classes == 3
    assert -3 < image.mean() < 3 and image.std() > 0.1
    assert data.class_counts["val"] == {"circle": 2, "square": 2, "triangle": 2}
    assert data.source.startswith("class-folders") and data.warnings == []
    # eval transforms are deterministic; train ones are random
    assert torch.equal(data.val[0][0], data.val[0][0])


def test_max_samples_caps_every_split_stratified(shapes_tree):
    data = build_classification_data(config(shapes_tree, max_samples=6))
    assert [len(data.train), len(data.val), len(data.test)] == [6, 6, 6]
    assert data.class_counts["train"] == {"circle": 2, "square": 2, "triangle": 2}


def test_grayscale_and_rgba_become_rgb_with_one_warning(tmp_path):
    ds = write_shapes_dataset(tmp_path / "odd", classes=("circle", "square"), n_per_class=6,
                              image_size=16, odd_modes=True)  # fmt: skip
    data = build_classification_data(config(ds.root, image_size=16))
    assert data.warnings == ["4 images converted to RGB (L: 2, RGBA: 2)"]
    for split in data.splits().values():
        for i in range(len(split)):
            assert split[i][0].shape == (3, 16, 16)


def test_unreadable_image_fails_at_build_naming_it(tmp_path, shapes_flat):
    root = tmp_path / "broken"
    shutil.copytree(shapes_flat, root)
    bad = root / "square" / "zz_broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(BadInputError, match="zz_broken.png: unreadable image"):
        build_classification_data(config(root))


def test_augmentations_keep_shape_and_rot90_is_exact():
    image = torch.arange(16.0).reshape(1, 4, 4)
    seen = {tuple(RandomRot90()(image).flatten().tolist()) for _ in range(64)}
    assert len(seen) == 4
    assert all(sorted(s) == list(range(16)) for s in seen)


def test_all_train_options_and_grayscale_input(shapes_flat):
    cfg = config(shapes_flat, image_size=20, vflip=0.5, rot90="true", color_jitter=0.2,
                 randaugment=2, random_erasing=0.5, train_crop="resized")  # fmt: skip
    data = build_classification_data(cfg)
    assert data.train[0][0].shape == (3, 20, 20)
    gray = config(shapes_flat, in_chans=1, mean="[0.5]", std="[0.25]")
    data = build_classification_data(gray)
    assert data.train[0][0].shape == (1, 64, 64) and data.warnings == []


def test_dataloader_with_workers(shapes_flat):
    data = build_classification_data(config(shapes_flat, image_size=16))
    loader = torch.utils.data.DataLoader(data.val, batch_size=4, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64


def test_scan_reads_only_the_named_splits(tmp_path, shapes_tree):
    root = tmp_path / "tree"
    shutil.copytree(shapes_tree, root)
    broken = next((root / "train" / "circle").glob("*.png"))
    broken.write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="unreadable image"):
        build_classification_data(config(root))  # every split is scanned by default
    data = build_classification_data(config(root), scan=("val",))  # evaluation of val
    assert len(data.val) > 0 and data.warnings == []
