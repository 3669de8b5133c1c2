import shutil
import time

import datasets
import numpy as np
import pytest
from PIL import Image

from cellbench.data.classify import resolve_source
from cellbench.errors import BadInputError
from cellbench.models import hub

from .conftest import data_config


def _names(split):
    return sorted(p.rsplit("/", 1)[-1] for p in split.paths)


def test_class_folders_split_per_class_deterministically(shapes_flat):
    a = resolve_source(data_config(shapes_flat, val_ratio=0.25, test_ratio=0.25, split_seed=5))
    b = resolve_source(data_config(shapes_flat, val_ratio=0.25, test_ratio=0.25, split_seed=5))
    c = resolve_source(data_config(shapes_flat, val_ratio=0.25, test_ratio=0.25, split_seed=6))
    assert a.kind == "class-folders" and a.classes == ["circle", "square", "triangle"]
    assert _names(a.val) == _names(b.val) and _names(a.val) != _names(c.val)
    assert [len(a.train), len(a.val), len(a.test)] == [18, 9, 9]
    everything = set(a.train.paths) | set(a.val.paths) | set(a.test.paths)
    assert len(everything) == 36  # disjoint, complete
    assert np.bincount(a.val.labels).tolist() == [3, 3, 3]


def test_tiny_classes_keep_a_val_image(tmp_path, shapes_flat):
    root = tmp_path / "tiny"
    for cls in ("circle", "square"):
        (root / cls).mkdir(parents=True)
        for p in sorted((shapes_flat / cls).glob("*.png"))[:2]:
            shutil.copy(p, root / cls)
    source = resolve_source(data_config(root, val_ratio=0.1, test_ratio=0.1))
    assert np.bincount(source.val.labels).tolist() == [1, 1]
    assert np.bincount(source.train.labels).tolist() == [1, 1]
    assert source.test is None  # 2 images per class: nothing left for test


def test_imagefolder_tree_uses_its_splits(shapes_tree):
    source = resolve_source(data_config(shapes_tree))
    assert source.kind == "imagefolder-tree"
    assert all("/train/" in p for p in source.train.paths)
    assert all("/val/" in p for p in source.val.paths)
    assert all("/test/" in p for p in source.test.paths)


def test_tree_without_val_carves_it_from_train(tmp_path, shapes_tree):
    root = tmp_path / "trainonly"
    shutil.copytree(shapes_tree / "train", root / "train")
    source = resolve_source(data_config(root, val_ratio=0.2, test_ratio=0.0))
    assert all("/train/" in p for p in source.val.paths) and source.test is None
    assert set(source.train.paths).isdisjoint(source.val.paths)


def test_selected_classes_are_kept_in_order(shapes_flat):
    source = resolve_source(data_config(shapes_flat, classes="[triangle, circle]"))
    assert source.classes == ["triangle", "circle"]
    assert all(("/triangle/" in p) == (label == 0) for p, label in
               zip(source.train.paths, source.train.labels, strict=True))  # fmt: skip
    with pytest.raises(BadInputError, match="hexagon not found"):
        resolve_source(data_config(shapes_flat, classes="[hexagon]"))


def _hf_dataset(n_per_class=6, names=("cat", "dog"), mode="RGB"):
    images, labels = [], []
    for label in range(len(names)):
        for i in range(n_per_class):
            images.append(Image.new(mode, (8, 8), color=(i * 20, label * 90, 5)[: len(mode)]))
            labels.append(label)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))}
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_saved_datasetdict_train_valid_carves_test_from_valid(tmp_path):
    root = tmp_path / "hf"
    datasets.DatasetDict(train=_hf_dataset(6), valid=_hf_dataset(10)).save_to_disk(str(root))
    source = resolve_source(data_config(root, test_ratio=0.2))
    assert source.kind == "hf-disk" and source.classes == ["cat", "dog"]
    assert len(source.train) == 12
    assert [len(source.val), len(source.test)] == [16, 4]  # 80% / 20% of valid, per class
    assert source.val.load(0).mode == "RGB"


def test_saved_single_dataset_with_string_labels_is_split(tmp_path):
    root = tmp_path / "single"
    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (8, 8)) for _ in range(12)], "species": ["b", "a"] * 6},
        features=datasets.Features({"img": datasets.Image(), "species": datasets.Value("string")}),
    )
    ds.save_to_disk(str(root))
    source = resolve_source(data_config(root, hf_image_key="img", hf_label_key="species"))
    assert source.classes == ["a", "b"]
    assert len(source.train) + len(source.val) + len(source.test) == 12
    with pytest.raises(BadInputError, match="no label column 'label'"):
        resolve_source(data_config(root, hf_image_key="img"))


def test_hf_imagefolder_builder(tmp_path, shapes_tree, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    source = resolve_source(data_config(f"hf-imagefolder:{shapes_tree}"))
    assert source.kind == "hf-imagefolder"
    assert source.classes == ["circle", "square", "triangle"]
    assert len(source.train) == 42 and source.test is not None


def test_hub_name_offline_fails_fast_with_the_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    start = time.monotonic()
    with pytest.raises(BadInputError, match="hf:nobody/no-such-dataset"):
        resolve_source(data_config("hf:nobody/no-such-dataset"))
    assert time.monotonic() - start < 20
    hub.hub_reachable.cache_clear()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: None, "data path not found"),
        (lambda root: root.mkdir(), "no class subfolders"),
        (lambda root: (root / "a").mkdir(parents=True), "class 'a' has no images"),
        (
            lambda root: (root.mkdir(), (root / "x.png").write_bytes(b"")),
            "images but no class subfolders",
        ),
    ],
)
def test_bad_folders_name_the_path(tmp_path, make, match):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(BadInputError, match=match) as info:
        resolve_source(data_config(root))
    assert str(root) in str(info.value)


def _as_unprivileged(code: str, *args: str):
    """Run ``code`` where permissions apply: as root, without the capabilities that bypass them
    (root reads any folder whatever its mode, so a chmod alone proves nothing here)."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-c", code, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: permissions cannot be enforced")
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


RESOLVE = """
import sys
from cellbench.config import DataConfig
from cellbench.data.classify.sources import resolve_source
from cellbench.errors import BadInputError
for path in sys.argv[1:]:
    try:
        resolve_source(DataConfig(path=path))
    except BadInputError as exc:
        print(exc)
"""


def test_an_unreadable_data_or_class_folder_is_named_as_unreadable(tmp_path, shapes_flat):
    data = shutil.copytree(shapes_flat, tmp_path / "data")
    classes = shutil.copytree(shapes_flat, tmp_path / "classes")
    unreadable = [data, classes / "square"]
    for folder in unreadable:
        folder.chmod(0)
    try:
        result = _as_unprivileged(RESOLVE, str(data), str(classes))
    finally:
        for folder in unreadable:
            folder.chmod(0o755)
    # the folder itself, as unreadable: not a dataset_dict.json it never held, not "no images"
    expected = [f"{folder}: cannot read folder (Permission denied)" for folder in unreadable]
    assert result.stdout.splitlines() == expected, result.stdout + result.stderr[-2000:]
