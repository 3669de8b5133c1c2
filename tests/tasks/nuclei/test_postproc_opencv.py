"""HoVer-Net parity: cellbench's scipy post-processing against OpenCV (opencv-python-headless, a
dev dependency) on PanNuke-shaped 256-px maps with nuclei cut by the tile border.

``hovernet_instances`` below redoes HoVer-Net's ``__proc_np_hv`` step by step with the OpenCV
calls it makes (cv2.normalize, cv2.Sobel, cv2.GaussianBlur, cv2.morphologyEx), so each operator
of ``cellbench.tasks.nuclei.postproc`` is checked against the library HoVer-Net actually ran.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import watershed

from cellbench.data.targets import hv_maps
from cellbench.tasks.nuclei.postproc import (
    PostProcParams,
    _cv2_blur3,
    _cv2_ellipse,
    _cv2_opening,
    _energy,
    instance_map,
)
from tests.metrics.conftest import generated_maps

SIZE = 256  # PanNuke's tile


def _compact(labels: np.ndarray) -> np.ndarray:
    present = np.unique(labels)
    lut = np.zeros(int(present[-1]) + 1, dtype=np.int32)
    lut[present[present > 0]] = np.arange(1, int((present > 0).sum()) + 1)
    return lut[labels]


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    labels[(sizes < min_size)[labels]] = 0
    return labels


def _cv2_minmax(x: np.ndarray) -> np.ndarray:
    return cv2.normalize(x, None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)


def hovernet_energy(hv: np.ndarray, ksize: int) -> np.ndarray:
    sobel_h = cv2.Sobel(_cv2_minmax(hv[0]), cv2.CV_64F, 1, 0, ksize=ksize)
    sobel_v = cv2.Sobel(_cv2_minmax(hv[1]), cv2.CV_64F, 0, 1, ksize=ksize)
    return np.maximum(1 - _cv2_minmax(sobel_h), 1 - _cv2_minmax(sobel_v))


def hovernet_instances(np_prob: np.ndarray, hv: np.ndarray, p: PostProcParams) -> np.ndarray:
    """HoVer-Net's instance map of one tile, with OpenCV (compact ids 1..K)."""
    blob = ndimage.label((np_prob >= p.np_threshold).astype(np.int32))[0]
    blob = _remove_small(blob, p.min_object_size)
    blob[blob > 0] = 1
    overall = hovernet_energy(hv.astype(np.float32), p.sobel_size)
    overall = overall - (1 - blob)  # float64, as HoVer-Net's int32 foreground makes it
    overall[overall < 0] = 0
    dist = (1.0 - overall) * blob
    dist = -cv2.GaussianBlur(dist, (3, 3), 0) if p.blur else -dist
    marker = blob - (overall >= p.marker_threshold).astype(np.int32)
    marker[marker < 0] = 0
    marker = ndimage.binary_fill_holes(marker).astype(np.uint8)
    size = p.marker_open_size
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    marker = cv2.morphologyEx(marker, cv2.MORPH_OPEN, kernel)
    marker = _remove_small(ndimage.label(marker)[0], p.min_marker_size)
    return _compact(watershed(dist, markers=marker, mask=blob))


@pytest.fixture(scope="module")
def predicted():
    """Model-like maps of generated 256-px tiles: a noisy, smooth nucleus probability and noisy
    HV maps around the true ones, some nuclei cut by the tile border."""
    inst, _, _ = generated_maps(4, SIZE, seed=7)
    border = np.concatenate([inst[:, 0], inst[:, -1], inst[:, :, 0], inst[:, :, -1]], axis=1)
    assert (border > 0).sum() > 20  # nuclei on the border: what the opening used to erode
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(size=inst.shape), (0, 2, 2))
    np_prob = np.clip((inst > 0) * 0.8 + 0.1 + 0.5 * noise, 0, 1).astype(np.float32)
    hv = hv_maps(inst) + 0.15 * ndimage.gaussian_filter(
        rng.normal(size=(len(inst), 2, SIZE, SIZE)), (0, 0, 1.5, 1.5)
    )
    return np_prob, hv.astype(np.float32), inst


def test_operators_equal_opencv_including_borders(predicted):
    np_prob, hv, inst = predicted
    for size in (3, 5, 7):
        assert (
            _cv2_ellipse(size) == cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size,) * 2)
        ).all()
    for i in range(len(inst)):
        mask = inst[i] > 0
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
        assert (_cv2_opening(mask, 5) == opened).all()
        x = np_prob[i].astype(np.float64)
        np.testing.assert_allclose(_cv2_blur3(x), cv2.GaussianBlur(x, (3, 3), 0), atol=1e-12)
        for ksize in (5, 21):
            # equal to float32 rounding: OpenCV's Sobel sums in another order than scipy's
            ours, theirs = _energy(hv[i], ksize), hovernet_energy(hv[i], ksize)
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=2.5e-7)
    # what the scipy defaults got wrong: erosion from the border, a sampled Gaussian, reflect
    mask = inst[0] > 0
    assert (ndimage.binary_opening(mask, _cv2_ellipse(5)) != _cv2_opening(mask, 5)).any()
    x = np_prob[0].astype(np.float64)
    assert not np.allclose(ndimage.gaussian_filter(x, 0.8, truncate=1.25), _cv2_blur3(x))


@pytest.mark.parametrize(
    "params",
    [PostProcParams(), PostProcParams(sobel_size=5, marker_open_size=3, min_marker_size=3)],
    ids=["hovernet-defaults", "tuned-like"],
)
def test_instance_maps_equal_hovernet_with_opencv(predicted, params):
    np_prob, hv, _ = predicted
    for i in range(len(np_prob)):
        ours = instance_map(np_prob[i], hv[i], params)
        theirs = hovernet_instances(np_prob[i], hv[i], params)
        assert ours.max() > 3
        np.testing.assert_array_equal(ours, theirs)
