"""``open_feature_store``: stale, incomplete or failed stores are refused unless forced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cellbench.data.prepare import prepare
from cellbench.errors import BadInputError
from cellbench.features.extract import extract_features
from cellbench.features.store import open_feature_store
from cellbench.models.backbones import build_backbone


@pytest.fixture
def extracted(fx_store, tiny_vit):
    backbone = build_backbone(str(tiny_vit), device="cpu")
    root, _ = extract_features(fx_store, backbone)
    return root


def test_a_fresh_store_opens_with_its_folds(extracted):
    store = open_feature_store(extracted)
    assert sorted(store.folds) == [1, 2] and store.dim == 32
    fold = store.fold(1)
    assert fold.cls.shape == (10, 32) and len(fold.tissues) == 10
    assert store.warnings == []


def test_a_re_prepared_source_makes_the_store_stale(extracted, fx_store, fx_raw):
    prepare(fx_raw, fx_store, folds=(1,), force=True)  # same data, a new preparation
    with pytest.raises(BadInputError, match=r"source fold 1 changed .*--force"):
        open_feature_store(extracted)
    open_feature_store(extracted, folds=[2])  # fold 2 was not touched
    forced = open_feature_store(extracted, force=True)
    assert any("changed" in w for w in forced.warnings)


def test_a_changed_mean_std_makes_the_store_stale(extracted, tiny_vit):
    profile = yaml.safe_load(tiny_vit.read_text())
    profile["preprocessing"]["std"] = [0.25, 0.25, 0.25]
    tiny_vit.write_text(yaml.safe_dump(profile))
    with pytest.raises(BadInputError, match=r"preprocessing changed .*std"):
        open_feature_store(extracted)


def test_nan_or_constant_cls_rows_and_incomplete_folds_are_refused(extracted):
    cls = np.load(extracted / "fold1" / "cls.npy", mmap_mode="r+")
    cls[3] = 0.0  # a tile never written
    cls.flush()
    del cls
    with pytest.raises(BadInputError, match="1 constant CLS rows"):
        open_feature_store(extracted)
    cls = np.load(extracted / "fold2" / "cls.npy", mmap_mode="r+")
    cls[0, 5] = np.nan
    cls.flush()
    del cls
    with pytest.raises(BadInputError, match="non-finite"):
        open_feature_store(extracted, folds=[2])
    manifest_path = extracted / "fold2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(complete=False, done=4)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BadInputError, match="incomplete"):
        open_feature_store(extracted, folds=[2])


def test_not_a_feature_store(tmp_path):
    with pytest.raises(BadInputError, match="not a feature store"):
        open_feature_store(tmp_path)


def test_weights_that_give_nan_features_are_recorded_and_refused(fx_store, tiny_vit, tmp_path):
    import torch
    from safetensors.torch import save_file

    from cellbench.models.backbones import create_vit, load_backbone_profile

    model = create_vit(load_backbone_profile(str(tiny_vit)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["norm.weight"][3] = float("nan")  # a corrupted checkpoint: one NaN in the final norm
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    root, _ = extract_features(fx_store, build_backbone(str(tiny_vit), path, device="cpu"), [1])
    fold = json.loads((root / "fold1" / "manifest.json").read_text())
    assert fold["stats"]["nonfinite_cls_rows"] == 10
    assert fold["stats"]["nonfinite_tokens_rows"] == 0  # raw block outputs: before the norm
    with pytest.raises(BadInputError, match="10 tiles with non-finite cls values"):
        open_feature_store(root)
    assert torch.isnan(
        torch.from_numpy(np.load(root / "fold1" / "cls.npy")[:, 3].astype("f4"))
    ).all()


def test_a_file_given_as_the_store_is_named_as_a_file(tmp_path):
    """`--features data/manifest.json` used to say "data/manifest.json/manifest.json: ..."."""
    given = tmp_path / "cls.npy"
    given.write_bytes(b"not a folder")
    with pytest.raises(BadInputError, match=r"cls\.npy: a file, not a feature store folder"):
        open_feature_store(given)
