"""Post-processing tuning: finds better parameters than the defaults when they are wrong for the
data, never worse ones, and freezes them into the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench.data.targets import hv_maps
from cellbench.errors import BadInputError
from cellbench.tasks.nuclei.postproc import PostProcParams
from cellbench.tasks.nuclei.postproc_tune import (
    POSTPROC_FILE,
    bpq_of,
    load_frozen,
    save_frozen,
    tune_postproc,
)
from tests.metrics.conftest import generated_maps


@pytest.fixture(scope="module")
def under_confident():
    """Validation maps of a model that is right about where nuclei are but under-confident:
    nucleus probability 0.42 inside nuclei, so HoVer-Net's 0.5 threshold finds nothing."""
    inst, _, tissues = generated_maps(6, 96, seed=7)
    np_prob = np.where(inst > 0, 0.42, 0.05).astype(np.float32)
    return np_prob, hv_maps(inst), inst, tissues


def test_tuning_beats_wrong_defaults_and_reports_both_scores(under_confident):
    np_prob, hv, inst, tissues = under_confident
    seen = []
    result = tune_postproc(np_prob, hv, inst, tissues, on_trial=seen.append)
    assert result.default_bPQ == pytest.approx(0.0)
    assert result.params.np_threshold < 0.42
    assert result.bPQ > 0.8
    # the frozen parameters reproduce the reported score
    assert bpq_of(result.params, np_prob, hv, inst, tissues) == pytest.approx(result.bPQ)
    assert len(seen) == len(result.trials) >= 10
    assert max(t.bPQ for t in result.trials) == pytest.approx(result.bPQ)


def test_tuning_keeps_parameters_that_are_already_best(under_confident):
    _, hv, inst, tissues = under_confident
    np_prob = (inst > 0).astype(np.float32)
    start = PostProcParams(sobel_size=5, marker_open_size=1, min_object_size=3, min_marker_size=3)
    result = tune_postproc(np_prob, hv, inst, tissues, start=start, space={"np_threshold": (0.3,)})
    assert result.params == start  # a tie never moves away from the starting point
    assert result.bPQ == result.default_bPQ


def test_nothing_to_tune_on_is_refused(under_confident):
    np_prob, hv, inst, tissues = under_confident
    with pytest.raises(BadInputError, match="no nucleus"):
        tune_postproc(np_prob, hv, np.zeros_like(inst), tissues)


def test_frozen_parameters_round_trip_and_a_damaged_file_is_named(tmp_path, under_confident):
    np_prob, hv, inst, tissues = under_confident
    assert load_frozen(tmp_path) is None
    result = tune_postproc(np_prob, hv, inst, tissues, space={"np_threshold": (0.3, 0.4)})
    save_frozen(tmp_path, result, {"split": "val", "folds": [2]})
    frozen = load_frozen(tmp_path)
    assert frozen.params == result.params
    assert "tuned on the val fold 2" in frozen.describe()
    saved = json.loads((tmp_path / POSTPROC_FILE).read_text())
    assert saved["params"]["np_threshold"] == result.params.np_threshold
    assert saved["default_bPQ"] == pytest.approx(0.0)

    (tmp_path / POSTPROC_FILE).write_text('{"params": {"np_threshold": 7}}')
    with pytest.raises(BadInputError, match=POSTPROC_FILE):
        load_frozen(tmp_path)
    (tmp_path / POSTPROC_FILE).write_text("{torn")
    with pytest.raises(BadInputError, match="unreadable JSON"):
        load_frozen(tmp_path)
