"""``features check``: each check fires on the problem it names, and only then."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cellbench.features.check import check_feature_store
from cellbench.features.extract import extract_features
from cellbench.models.backbones import build_backbone


@pytest.fixture
def extracted(fx_store, tiny_vit):
    backbone = build_backbone(str(tiny_vit), device="cpu")
    root, _ = extract_features(fx_store, backbone, folds=[1])
    return root


def _checks(report):
    return {(f.severity, f.check) for f in report.findings}


def test_a_good_store_passes(extracted):
    report = check_feature_store(extracted)
    assert report.ok, report.findings
    assert 0.5 < report.folds[1]["cls_std"] < 1.5
    assert report.folds[1]["duplicate_cls_rows"] == 0


def test_nan_in_tokens_and_constant_rows_are_caught(extracted):
    tokens = np.load(extracted / "fold1" / "tokens.npy", mmap_mode="r+")
    tokens[2, 1, 0, 0, 0] = np.inf
    tokens[4] = 0.5
    tokens.flush()
    del tokens
    report = check_feature_store(extracted)
    assert not report.ok
    assert {("error", "nonfinite"), ("error", "constant")} <= _checks(report)
    assert report.folds[1]["nonfinite_tokens"] == 1
    assert report.folds[1]["constant_tokens_rows"] == 1


def test_duplicated_cls_rows_are_caught(extracted):
    cls = np.load(extracted / "fold1" / "cls.npy", mmap_mode="r+")
    cls[1] = cls[0]
    cls.flush()
    del cls
    report = check_feature_store(extracted)
    assert report.folds[1]["duplicate_cls_rows"] == 1
    assert ("error", "duplicates") in _checks(report)  # 1 of 10 tiles: above 5%


def test_cls_std_outside_the_profile_range_names_seeds_001_cause(extracted):
    cls = np.load(extracted / "fold1" / "cls.npy", mmap_mode="r+")
    cls[:] = (cls * 0.3).astype(np.float16)  # what a missing final norm looked like: ~0.28
    cls.flush()
    del cls
    report = check_feature_store(extracted)
    (finding,) = [f for f in report.findings if f.check == "cls_std"]
    assert finding.severity == "error"
    assert "final norm" in finding.message and "mean/std" in finding.message


def test_staleness_and_counts(extracted, tiny_vit, fx_store):
    profile = yaml.safe_load(tiny_vit.read_text())
    profile["preprocessing"]["input_size"] = 40
    tiny_vit.write_text(yaml.safe_dump(profile))
    report = check_feature_store(extracted)
    assert ("error", "stale") in _checks(report)
    (fx_store / "fold1" / "manifest.json").unlink()
    report = check_feature_store(extracted)
    assert any("gone" in f.message for f in report.findings)
