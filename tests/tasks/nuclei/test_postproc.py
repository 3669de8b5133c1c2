"""HV post-processing: ground-truth maps come back as the true nuclei; parameters; types."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench.data.targets import hv_maps
from cellbench.errors import BadInputError
from cellbench.metrics.nuclei import score_tiles, summarise
from cellbench.tasks.nuclei.postproc import (
    PostProcParams,
    _cv2_ellipse,
    _sobel_kernels,
    nucleus_types,
    postprocess_tile,
    postprocess_tiles,
    type_map,
)
from tests.metrics.conftest import generated_maps

# Generated tiles are drawn at about twice PanNuke's 40x pixel size: HoVer-Net's 40x defaults
# (Sobel 21, a 5x5 marker opening) erase the markers of their small and thin nuclei, as they
# would at 20x; these are the parameters a --tune-postproc would pick for them.
GENERATED = PostProcParams(
    sobel_size=5, marker_open_size=1, min_object_size=3, min_marker_size=3, blur=False
)


def one_hot(types: np.ndarray) -> np.ndarray:
    return np.eye(6, dtype=np.float32)[types].transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def truth():
    inst, types, tissues = generated_maps(12, 256, seed=3)
    return inst, types, tissues, hv_maps(inst)


def test_ground_truth_maps_come_back_as_the_true_nuclei(truth):
    inst, types, tissues, hv = truth
    out = postprocess_tiles((inst > 0).astype(np.float32), hv, one_hot(types), GENERATED)
    pred = np.stack([o[0] for o in out])
    pred_types = np.stack([type_map(*o) for o in out])
    result = summarise(score_tiles(inst, types, pred, pred_types), tissues)
    assert result.bPQ >= 0.95 and result.bPQ_image_avg >= 0.95
    assert result.mPQ >= 0.9 and result.dice >= 0.99
    # one-hot type maps: nuclei typed 1..5, with probability 1 unless they straddle two types
    typed = np.array([(t, p) for _, d in out for t, p in d.values()])
    assert set(typed[:, 0]) <= {1, 2, 3, 4, 5} and (typed[:, 1] > 0).all()
    assert np.median(typed[:, 1]) == 1.0 and typed[:, 1].mean() > 0.95
    assert all(pred[i].max() == len(out[i][1]) for i in range(len(out)))  # ids 1..K


def test_hovernet_defaults_and_their_record(truth):
    inst, types, _, hv = truth
    default = PostProcParams()
    assert (default.sobel_size, default.marker_threshold, default.min_object_size) == (21, 0.4, 10)
    saved = json.loads(json.dumps(GENERATED.to_dict()))
    assert PostProcParams.from_dict(saved, "run.json") == GENERATED
    # the defaults still separate the large nuclei of a tile
    labels, _ = postprocess_tile((inst[0] > 0).astype(np.float32), hv[0], None, default)
    assert labels.max() > 0


def test_touching_nuclei_are_separated_by_their_hv_maps():
    inst = np.zeros((48, 64), np.int32)
    inst[10:38, 6:32], inst[10:38, 32:58] = 1, 2  # one foreground blob, two nuclei
    hv = hv_maps(inst[None])[0]
    labels, types = postprocess_tile((inst > 0).astype(np.float32), hv)
    assert labels.max() == 2 and types == {}
    assert len(np.unique(labels[inst == 1])) == 1 and labels[20, 10] != labels[20, 50]


def test_empty_probability_gives_no_nuclei():
    labels, types = postprocess_tile(
        np.zeros((32, 32)), np.zeros((2, 32, 32)), np.zeros((6, 32, 32))
    )
    assert labels.dtype == np.int32 and labels.max() == 0 and types == {}


def test_type_vote_ignores_background_and_reports_mean_probability():
    inst = np.zeros((4, 4), np.int32)
    inst[0, :3], inst[3, :2] = 1, 2
    nt = np.zeros((6, 4, 4))
    nt[0] = 1.0  # background everywhere ...
    nt[:, 0, 0] = [0.2, 0.0, 0.0, 0.8, 0.0, 0.0]  # ... but one pixel of nucleus 1 says type 3
    nt[:, 0, 1] = [0.9, 0.0, 0.0, 0.1, 0.0, 0.0]
    nt[:, 3, 0] = [0.6, 0.1, 0.3, 0.0, 0.0, 0.0]  # nucleus 2: all background votes
    types = nucleus_types(inst, nt)
    assert types[1][0] == 3 and types[1][1] == pytest.approx(0.3)  # (0.8 + 0.1 + 0) / 3
    assert types[2] == (2, pytest.approx(0.15))  # highest mean probability among the types
    five = nucleus_types(inst, nt[1:])  # types-only channels
    assert five[1][0] == 3
    with pytest.raises(ValueError, match="nt_prob"):
        nucleus_types(inst, nt[:3])


def test_operators_match_opencv():
    smooth, deriv = _sobel_kernels(5)  # cv2.getDerivKernels(1, 0, 5)
    assert smooth.tolist() == [1, 4, 6, 4, 1] and deriv.tolist() == [-1, -2, 0, 2, 1]
    assert _cv2_ellipse(5).astype(int).tolist() == [
        [0, 0, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
    ]


def test_bad_parameters_are_refused_with_the_source_named():
    with pytest.raises(ValueError, match="odd"):
        PostProcParams(sobel_size=20)
    with pytest.raises(ValueError, match="np_threshold"):
        PostProcParams(np_threshold=1.5)
    with pytest.raises(BadInputError, match="run.json: unknown post-processing parameter 'ksize'"):
        PostProcParams.from_dict({"ksize": 3}, "run.json")
    with pytest.raises(BadInputError, match="run.json"):
        PostProcParams.from_dict({"sobel_size": 4.5}, "run.json")
    with pytest.raises(BadInputError, match="run.json"):
        PostProcParams.from_dict({"np_threshold": "high"}, "run.json")
    with pytest.raises(BadInputError, match="run.json: blur must be true or false"):
        PostProcParams.from_dict({"blur": 0.8}, "run.json")


def test_a_postproc_json_of_the_sigma_era_still_loads():
    """Runs tuned before the OpenCV parity saved ``blur_sigma`` (0 = none, 0.8 = HoVer-Net's)."""
    assert PostProcParams.from_dict({"blur_sigma": 0.8}).blur is True
    assert PostProcParams.from_dict({"blur_sigma": 0.0, "sobel_size": 5}).blur is False


def test_two_workers_give_the_same_nuclei_as_one(truth):
    inst, types, _, hv = truth
    np_prob = (inst[:6] > 0).astype(np.float32)
    one = postprocess_tiles(np_prob, hv[:6], one_hot(types[:6]), GENERATED, workers=1, chunk=2)
    two = postprocess_tiles(np_prob, hv[:6], one_hot(types[:6]), GENERATED, workers=2, chunk=2)
    assert len(one) == len(two) == 6
    for (a, ta), (b, tb) in zip(one, two, strict=True):
        assert (a == b).all() and ta == tb
