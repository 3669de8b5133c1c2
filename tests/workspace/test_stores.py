"""cellbench.workspace.stores: the stores under a data folder and their health, from manifests."""

from __future__ import annotations

import json
import shutil

from cellbench.data.prepare import prepare
from cellbench.workspace.stores import (
    data_store_health,
    feature_store_health,
    find_data_stores,
    find_feature_stores,
)


def test_stores_are_found_once_with_tiles_and_staleness(tmp_path, fx_store, fx_raw, tiny_vit):
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    data = tmp_path / "data"
    store = shutil.copytree(fx_store, data / "project" / "store")
    root, _ = extract_features(store, build_backbone(str(tiny_vit), device="cpu"), tag="t")
    (data / "notes").mkdir()
    # a store's folds and features are not stores of their own
    assert find_data_stores(data) == [store]
    assert find_feature_stores(data) == [root]
    health = data_store_health(store)
    assert health.tiles == 20 and health.bytes > 0 and not health.stale
    features = feature_store_health(root)
    assert features.tiles == 20 and not features.stale and features.backbone

    # an interrupted extraction, then a re-prepared source: each is a reason, quick and full
    manifest = root / "fold2" / "manifest.json"
    fm = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fm, "complete": False}))
    assert feature_store_health(root).problems == ["fold 2 extraction incomplete"]
    manifest.write_text(json.dumps(fm))
    prepare(fx_raw, store, folds=(1, 2), force=True)
    quick = feature_store_health(root).problems
    assert quick and all("changed since extraction" in p for p in quick)
    assert feature_store_health(root, full=True).problems[:1] == quick[:1]
    assert feature_store_health(tmp_path / "nope").problems == [
        "not a feature store (no manifest.json)"
    ]
