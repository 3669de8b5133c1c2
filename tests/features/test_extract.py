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
    reference, _ = extract_features(fx_store, backbone, folds=[1], tag="reference", batch_size=3)

    def stop_after_two_batches(fold, done, total):
        if done >= 6:
            raise KeyboardInterrupt  # as Ctrl-C once the second batch went to the writer

    with pytest.raises(KeyboardInterrupt):
        extract_features(
            fx_store,
            backbone,
            folds=[1],
            tag="resumed",
            batch_size=3,
            progress=stop_after_two_batches,
        )
    root = fx_store / "features" / "resumed"
    partial = json.loads((root / "fold1" / "manifest.json").read_text())
    # the batches handed to the writer were written and committed on the way out
    assert partial["complete"] is False and partial["done"] == 6
    _, results = extract_features(fx_store, backbone, folds=[1], tag="resumed", batch_size=3)
    assert results[0].status == "resumed"
    for name in ("cls.npy", "tokens.npy", "tissues.json"):
        assert (root / "fold1" / name).read_bytes() == (reference / "fold1" / name).read_bytes()


def test_commits_come_by_time_or_every_chunk_size_tiles(fx_store, tiny_vit, monkeypatch):
    """A commit (fsync + manifest) per batch made a fast backbone wait on the disk: rows are
    committed every COMMIT_SECONDS, or every --chunk-size tiles when given, and at the end."""
    import cellbench.features.extract as extract

    backbone = build_backbone(str(tiny_vit), device="cpu")
    seen: dict[str, list[int]] = {}

    def record(tag):
        manifest = fx_store / "features" / tag / "fold1" / "manifest.json"

        def progress(fold, done, total):
            seen.setdefault(tag, []).append(json.loads(manifest.read_text())["done"])

        return progress

    monkeypatch.setattr(extract, "COMMIT_SECONDS", 3600.0)
    # one write waiting at most: when batch k is handed on, batch k - 1 is written (no race)
    monkeypatch.setattr(extract, "WRITE_DEPTH", 1)
    extract_features(fx_store, backbone, [1], "by-time", batch_size=2, progress=record("by-time"))
    assert set(seen["by-time"]) == {0}  # nothing committed before the end: no time had passed
    extract_features(
        fx_store, backbone, [1], "by-chunk", batch_size=2, chunk_size=4,
        progress=record("by-chunk"),
    )  # fmt: skip
    assert seen["by-chunk"] == [0, 0, 0, 4, 4, 8]  # the writer committed every 4 tiles
    monkeypatch.setattr(extract, "COMMIT_SECONDS", 0.0)
    extract_features(fx_store, backbone, [1], "every", batch_size=2, progress=record("every"))
    assert seen["every"] == [0, 0, 2, 4, 6, 8]
    for tag in ("by-time", "by-chunk", "every"):
        done = json.loads((fx_store / "features" / tag / "fold1" / "manifest.json").read_text())
        assert done["complete"] and done["done"] == 10
        for name in ("cls.npy", "tokens.npy"):
            got = (fx_store / "features" / tag / "fold1" / name).read_bytes()
            assert got == (fx_store / "features" / "by-time" / "fold1" / name).read_bytes()


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


def test_sigterm_commits_what_was_handed_to_the_writer_then_resumes(fx_store, tiny_vit):
    """No commit was due (by time or --chunk-size) when SIGTERM came: the rows handed to the
    writer are still written and committed on the way out, so the rerun redoes none of them."""
    import os
    import signal

    from cellbench.signals import Terminated

    backbone = build_backbone(str(tiny_vit), device="cpu")

    def terminate_at_four(fold, done, total):
        if done == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Terminated):
        extract_features(fx_store, backbone, [1], "term", batch_size=2, progress=terminate_at_four)
    root = fx_store / "features" / "term"
    partial = json.loads((root / "fold1" / "manifest.json").read_text())
    assert partial["complete"] is False and partial["done"] in (4, 6)  # a batch may follow
    extract_features(fx_store, backbone, [1], "whole", batch_size=2)
    _, results = extract_features(fx_store, backbone, [1], "term", batch_size=2)
    assert results[0].status == "resumed"
    for name in ("cls.npy", "tokens.npy"):
        whole = (fx_store / "features" / "whole" / "fold1" / name).read_bytes()
        assert (root / "fold1" / name).read_bytes() == whole
