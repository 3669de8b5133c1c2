"""``store_backbone``: the one rebuild of a feature store's backbone that organ and nuclei
inference share (same weights, same blocks), and a damaged manifest refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cellbench.data.store import open_fold
from cellbench.errors import BadInputError
from cellbench.features.extract import extract_features
from cellbench.features.source_backbone import store_backbone
from cellbench.models.backbones import build_backbone, preprocess


def test_rebuilt_backbone_has_the_stores_weights_and_blocks(fx_store, tiny_vit, tiny_vit_weights):
    # blocks other than the profile's default: the organ path used to drop them
    made = build_backbone(str(tiny_vit), tiny_vit_weights, blocks=[1], device="cpu")
    root, _ = extract_features(fx_store, made, folds=[1], batch_size=4, chunk_size=4)
    rebuilt = store_backbone(root, "cpu")
    assert tuple(rebuilt.blocks) == (1,)
    assert rebuilt.weights["sha256"] == made.weights["sha256"]
    images = np.asarray(open_fold(fx_store, 1).images[:3])
    with torch.inference_mode():
        cls = rebuilt.model.forward_features(preprocess(images, rebuilt.profile))[:, 0]
    stored = np.load(root / "fold1" / "cls.npy")[:3].astype(np.float32)
    np.testing.assert_allclose(cls.numpy(), stored, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("backbone", [None, "shipped:vit-demo", {"weights": "x"}])
def test_damaged_manifest_is_one_line_naming_the_file(fx_store, tiny_vit, backbone):
    made = build_backbone(str(tiny_vit), device="cpu")
    root, _ = extract_features(fx_store, made, folds=[1], batch_size=4, chunk_size=4)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["backbone"] = backbone
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BadInputError, match="manifest.json"):
        store_backbone(root, "cpu")
