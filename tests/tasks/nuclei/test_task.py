"""Task ``nuclei``: a family decoder trained through the one engine on stored tokens."""

from __future__ import annotations

import json
import math

import pytest

from cellbench.config import load_config
from cellbench.data.families import DEFAULT_FAMILIES
from cellbench.engine.history import read_history
from cellbench.engine.session import TrainRequest, lr_find, overfit, train
from cellbench.errors import BadInputError, UsageError
from cellbench.runs.events import read_events
from cellbench.tasks import get_task
from tests.helpers_nuclei import make_nuclei_features, nuclei_features, nuclei_overrides

__all__ = ["nuclei_features"]  # the fixture, imported for pytest


def _request(tmp_path, features, *extra, run="dig"):
    return TrainRequest(
        overrides=nuclei_overrides(features, *extra), run=run, runs_dir=tmp_path / "runs"
    )


def _digestive_tiles(features, fold):
    tissues = json.loads((features.parent.parent / f"fold{fold}" / "tissues.json").read_text())
    return sum(t in DEFAULT_FAMILIES["digestive"] for t in tissues)


def test_a_family_decoder_trains_on_its_tissues_and_logs_terms_and_metrics(
    tmp_path, nuclei_features
):
    paths, result = train(_request(tmp_path, nuclei_features))
    assert result.status == "completed"
    start = read_events(paths.events, "run_start")[0]
    # only the family's tiles: fold 1 trains, fold 2 validates (split 1)
    assert start["train_size"] == _digestive_tiles(nuclei_features, 1)
    assert start["val_size"] == _digestive_tiles(nuclei_features, 2)
    rows = read_history(paths.history)
    for term in ("np_ce", "np_dice", "hv_mse", "hv_msge", "nt_ce", "nt_dice"):
        assert math.isfinite(rows[0][f"train_loss_{term}"])
        assert math.isfinite(rows[0][f"val_loss_{term}"])
    for metric in ("np_dice", "hv_mse", "nt_accuracy"):
        assert all(math.isfinite(r[f"val_{metric}"]) for r in rows)
    # bPQ every eval.pq_every=2 epochs only: post-processing is the slow part
    assert rows[0].get("val_bpq") is None and 0 <= rows[1]["val_bpq"] <= 1
    assert 0 <= rows[1]["val_np_dice"] <= 1


def test_a_stale_store_is_refused_and_force_trains_with_a_warning(tmp_path):
    features = make_nuclei_features(tmp_path / "d", tiles=6)
    source = features.parent.parent / "fold1" / "manifest.json"
    source.write_text(source.read_text().replace('"tiles"', '"tiles" ', 1))  # re-prepared
    with pytest.raises(BadInputError, match="changed since extraction"):
        train(_request(tmp_path, features, "data.family=null"))
    paths, result = train(
        _request(
            tmp_path, features, "data.family=null", "data.features_force=true", "train.epochs=1"
        )
    )
    assert result.status == "completed"
    warnings = [e["message"] for e in read_events(paths.events, "warning")]
    assert any("changed since extraction" in m for m in warnings)


def test_overfit_small_and_lr_find_work_for_nuclei(tmp_path, nuclei_features):
    extra = ("checks.overfit_loss=3.0", "checks.overfit_max_steps=40")
    paths, result = overfit(_request(tmp_path, nuclei_features, *extra, run=None), 2)
    assert paths.name == "nuclei-digestive-overfit"  # runs are named by their family
    assert result.passed and result.losses[-1] < result.losses[0]
    assert result.accuracy is not None  # the task's overfit metric: NP Dice

    _, found = lr_find(_request(tmp_path, nuclei_features, "train.lr_find.steps=8", run="lr"))
    assert len(found.lrs) >= 2 and all(math.isfinite(x) for x in found.losses)


def test_decoder_widths_must_match_the_stored_blocks(tmp_path, nuclei_features):
    with pytest.raises(UsageError, match="one width per token block"):
        train(_request(tmp_path, nuclei_features, "nuclei.widths=[8, 8, 8]"))
    with pytest.raises(UsageError, match="did you mean 'digestive'"):
        train(_request(tmp_path, nuclei_features, "data.family=digestiv"))
    with pytest.raises(UsageError, match="needs --set nuclei.backbone"):
        train(_request(tmp_path, nuclei_features, "nuclei.online_features=true"))
    with pytest.raises(UsageError, match="--features STORE/features/TAG is needed"):
        train(_request(tmp_path, nuclei_features, "data.features=null"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_hv_failure_signatures_of_seed_001_are_errors():
    task = get_task("nuclei")
    config = load_config()
    found = task.epoch_findings({"epoch": 3, "val_hv_mse": 4681.0, "val_np_dice": 0.02}, config)
    assert {f.check for f in found} == {"hv_targets", "np_targets"}
    assert all(f.severity == "error" for f in found)
    healthy = {"epoch": 3, "val_hv_mse": 0.02, "val_np_dice": 0.96}
    assert task.epoch_findings(healthy, config) == []


def test_family_scoped_expect_ranges_apply_to_that_family_only():
    config = load_config(overrides=["task=nuclei", "data.family=digestive"])
    config.expect = {
        "digestive.np_dice": [0.94, 1.0],
        "glandular.np_dice": [0.95, 1.0],
        "hv_mse": [0.0, 1.0],
    }
    assert get_task("nuclei").expect_ranges(config) == {
        "np_dice": [0.94, 1.0],
        "hv_mse": [0.0, 1.0],
    }


def test_online_features_run_the_frozen_backbone_and_checkpoint_the_decoder_only(
    tmp_path, nuclei_features
):
    import torch

    profile = nuclei_features.parent.parent.parent / "tiny-vit.yaml"
    store = nuclei_features.parent.parent
    extra = (
        "data.features=null",
        f"data.path={store}",
        "nuclei.online_features=true",
        f"nuclei.backbone={profile}",
        "data.rot90=true",
        "train.epochs=1",
    )
    paths, result = train(_request(tmp_path, nuclei_features, *extra, run="online"))
    assert result.status == "completed"
    assert math.isfinite(read_history(paths.history)[0]["val_np_dice"])
    weights = torch.load(paths.last_checkpoint, weights_only=True)["model"]
    assert weights and all(k.startswith("decoder.") for k in weights)  # no backbone inside
