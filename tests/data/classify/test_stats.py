import datasets

from cellbench.data.classify import class_counts

from .conftest import data_config


def test_counts_of_a_tree_and_a_flat_folder(shapes_tree, shapes_flat):
    tree = class_counts(shapes_tree)
    assert tree["train"] == {"circle": 14, "square": 14, "triangle": 14}
    assert set(tree) == {"train", "val", "test"}
    flat = class_counts(shapes_flat, data_config(shapes_flat, val_ratio=0.5, test_ratio=0.0))
    assert flat == {"train": {c: 6 for c in ("circle", "square", "triangle")},
                    "val": {c: 6 for c in ("circle", "square", "triangle")}}  # fmt: skip


def test_counts_of_a_saved_hf_dataset_read_only_labels(tmp_path):
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["x", "y", "z"])})  # fmt: skip
    # image bytes that are not images: counting must never decode them
    ds = datasets.Dataset.from_dict(
        {"image": [{"path": None, "bytes": b"not an image"} for i in range(9)],
         "label": [0, 0, 0, 0, 1, 1, 1, 2, 2]},
        features=features,
    )  # fmt: skip
    datasets.DatasetDict(train=ds, validation=ds).save_to_disk(str(tmp_path / "hf"))
    counts = class_counts(tmp_path / "hf", data_config(tmp_path / "hf", test_ratio=0.0))
    assert counts == {"train": {"x": 4, "y": 3, "z": 2}, "val": {"x": 4, "y": 3, "z": 2}}
