"""``features extract``: what the store holds, resuming, and refusing to mix settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cellbench.data.store import open_fold
from cellbench.errors import BadInputError, RunConflict
from cellbench.features.extract import extract_features
from cellbench.models.backbones import build_backbone, create_vit, load_backbone_profile, preprocess


def test_store_holds_forward_features_cls_and_block_tokens(fx_store, tiny_vit, tiny_vit_weights):
    backbone = build_backbone(str(tiny_vit), tiny_vit_weights, device="cpu")
    root, results = extract_features(fx_store, backbone, batch_size=3, chunk_size=4)
    assert root == fx_store / "features" / "tiny-vit"
    assert [r.status for r in results] == ["extracted", "extracted"]
    # an independent model: timm + the saved file, not the extraction's own objects
    from safetensors.torch import load_file

    profile = load_backbone_profile(str(tiny_vit))
    model = create_vit(profile)
    model.load_state_dict(load_file(str(tiny_vit_weights)))
    for fold in (1, 2):
        images = np.asarray(open_fold(fx_store, fold).images)
        cls = np.load(root / f"fold{fold}" / "cls.npy")
        tokens = np.load(root / f"fold{fold}" / "tokens.npy")
        assert cls.dtype == np.float16 and cls.shape == (10, 32)
        assert tokens.dtype == np.float16 and tokens.shape == (10, 2, 4, 4, 32)
        with torch.inference_mode():
            x = preprocess(images, profile)
            expected = model.forward_features(x)[:, 0].numpy()
            raw3 = model.forward_intermediates(x, indices=[2], norm=False, intermediates_only=True)
        np.testing.assert_allclose(cls.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(
            tokens[:, 1].astype(np.float32),
            raw3[0].permute(0, 2, 3, 1).numpy(),
            rtol=2e-3,
            atol=2e-3,
        )
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format"] == "cellbench-feature-store"
    assert manifest["blocks"] == [1, 3] and manifest["grid"] == [4, 4] and manifest["dim"] == 32
    assert manifest["backbone"]["weights"]["sha256"] == backbone.weights["sha256"]
    assert manifest["preprocessing"]["mean"] == [0.6, 0.5, 0.6]
    written = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "lock"
    )
    assert manifest["files"] == written  # exactly what cellbench wrote, for clean --features
    fold1 = json.loads((root / "fold1" / "manifest.json").read_text())
    assert fold1["complete"] and fold1["done"] == 10
    assert fold1["files"] == ["cls.npy", "manifest.json", "tissues.json", "tokens.npy"]
    assert 0.5 < fold1["stats"]["cls_std"] < 1.5
    assert len(fold1["source"]["manifest_sha256"]) == 64


def test_rerun_is_up_to_date_and_other_settings_are_refused(fx_store, tiny_vit):
    backbone = build_backbone(str(tiny_vit), device="cpu")
    root, _ = extract_features(fx_store, backbone, folds=[1])
    before = (root / "fold1" / "cls.npy").stat().st_mtime_ns
    _, again = extract_features(fx_store, backbone, folds=[1])
    assert again[0].status == "up to date"
    assert (root / "fold1" / "cls.npy").stat().st_mtime_ns == before
    other = build_backbone(str(tiny_vit), blocks=(2,), device="cpu")
    with pytest.raises(RunConflict, match="blocks"):
        extract_features(fx_store, other, folds=[1])
    _, forced = extract_features(fx_store, other, folds=[1], force=True)
    assert forced[0].status == "extracted"
    assert np.load(root / "fold1" / "tokens.npy").shape[1] == 1


def test_resume_after_interruption_gives_the_identical_store(fx_store, tiny_vit):
    backbone = build_backbone(str(tiny_vit), device="cpu")
    reference, _ = extract_features(fx_store, backbone, folds=[1], tag="reference", chunk_size=3)

    calls = []

    def stop_after_two_chunks(fold, done, total):
        calls.append(done)
        if done >= 6:
            raise KeyboardInterrupt  # as Ctrl-C between two chunks

    with pytest.raises(KeyboardInterrupt):
        extract_features(
            fx_store,
            backbone,
            folds=[1],
            tag="resumed",
            chunk_size=3,
            progress=stop_after_two_chunks,
        )
    root = fx_store / "features" / "resumed"
    partial = json.loads((root / "fold1" / "manifest.json").read_text())
    assert partial["complete"] is False and partial["done"] == 6
    _, results = extract_features(fx_store, backbone, folds=[1], tag="resumed", chunk_size=3)
    assert results[0].status == "resumed"
    for name in ("cls.npy", "tokens.npy", "tissues.json"):
        assert (root / "fold1" / name).read_bytes() == (reference / "fold1" / name).read_bytes()


def test_refuses_what_is_not_a_store_or_not_a_fold(fx_store, tiny_vit, tmp_path):
    backbone = build_backbone(str(tiny_vit), device="cpu")
    with pytest.raises(BadInputError, match="not a cellbench nuclei store"):
        extract_features(tmp_path / "nothing", backbone)
    with pytest.raises(BadInputError, match="fold.* 3 not in the store"):
        extract_features(fx_store, backbone, folds=[3])
    mine = fx_store / "features" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(BadInputError, match="not a feature store"):
        extract_features(fx_store, backbone, tag="mine")
    assert (mine / "notes.txt").read_text() == "my notes"


def test_a_second_process_on_the_same_tag_is_refused(fx_store, tiny_vit):
    import os

    from cellbench.runs.lock import RunLock

    backbone = build_backbone(str(tiny_vit), device="cpu")
    lock = fx_store / "features" / "busy" / "lock"
    with RunLock(lock), pytest.raises(RunConflict, match=str(os.getpid())):
        extract_features(fx_store, backbone, tag="busy")
