"""HV post-processing: nucleus probability, HV maps and type probabilities -> nuclei.

The steps and defaults are HoVer-Net's (Graham et al. 2019, ``models/hovernet/post_proc.py``,
``__proc_np_hv``), which CellViT reuses:

1. foreground = NP probability >= ``np_threshold``; its connected pieces smaller than
   ``min_object_size`` pixels are removed;
2. each HV channel is min-max scaled to [0, 1] and differentiated with a ``sobel_size`` Sobel
   kernel (x derivative of channel 0, y derivative of channel 1); each gradient is min-max
   scaled and inverted, and the energy is their maximum: high where HV jumps, i.e. on the
   borders between touching nuclei;
3. markers = foreground minus the energy >= ``marker_threshold``, holes filled, opened with a
   ``marker_open_size`` ellipse, labelled, pieces smaller than ``min_marker_size`` removed;
4. marker-controlled watershed (``skimage.segmentation.watershed``) of the inverted, smoothed
   (``blur``) "distance" (1 - energy) inside the foreground;
5. type of each nucleus: majority vote of the per-pixel type (argmax of the type probabilities)
   over its pixels, ignoring background votes; its probability is the mean probability of that
   type over the nucleus. Where every pixel votes background HoVer-Net leaves type 0; here the
   type of highest mean probability is taken (PanNuke's format has no channel for an untyped
   nucleus: docs/nuclei.md, differences from HoVer-Net/CellViT).

HoVer-Net uses OpenCV; cellbench does not depend on it at run time, so its operators are written
with scipy, and tested equal to OpenCV's (opencv-python-headless, a dev dependency) on
PanNuke-shaped maps with nuclei on the border: ``cv2.Sobel(ksize=k)`` is the separable product
of a binomial smoothing kernel and a binomial derivative kernel (``_sobel_kernels``); the
``MORPH_ELLIPSE`` is built the way OpenCV builds it (``_cv2_ellipse``); ``cv2.morphologyEx``'s
opening treats the outside of the image as foreground while eroding and background while
dilating, so a marker touching the border is not eroded there (``_cv2_opening``);
``GaussianBlur((3, 3), 0)`` is OpenCV's fixed 3-tap kernel [1/4, 1/2, 1/4] per axis (not a
sampled Gaussian of sigma 0.8); OpenCV's default border (reflect-101: ``dcb|abcd|cba``) is
scipy's ``mirror``; ``cv2.normalize`` to ``CV_32F`` rounds to float32 where HoVer-Net does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import comb
from skimage.segmentation import watershed

from cellbench.data.families import TYPE_CHANNELS
from cellbench.errors import BadInputError
from cellbench.metrics.tile_pool import TilePool, chunk_bounds, map_chunks


@dataclass(frozen=True)
class PostProcParams:
    """Post-processing parameters; the defaults are HoVer-Net's. Saved with any result that
    used them (``to_dict``) and read back with ``from_dict``."""

    np_threshold: float = 0.5  # nucleus probability at or above which a pixel is foreground
    min_object_size: int = 10  # foreground pieces smaller than this (pixels) are dropped
    sobel_size: int = 21  # Sobel kernel size (odd) for the HV gradients
    marker_threshold: float = 0.4  # energy at or above which a foreground pixel is no marker
    marker_open_size: int = 5  # ellipse (odd size) opening the markers
    min_marker_size: int = 10  # markers smaller than this (pixels) are dropped
    blur: bool = True  # smooth the watershed surface as cv2.GaussianBlur((3, 3), 0) does

    def __post_init__(self) -> None:
        if not 0 < self.np_threshold < 1:
            raise ValueError(f"np_threshold must lie in (0, 1), got {self.np_threshold}")
        if not 0 < self.marker_threshold < 1:
            raise ValueError(f"marker_threshold must lie in (0, 1), got {self.marker_threshold}")
        for name in ("sobel_size", "marker_open_size"):
            size = getattr(self, name)
            if size < 1 or size % 2 == 0:
                raise ValueError(f"{name} must be a positive odd number, got {size}")
        if self.sobel_size < 3:
            raise ValueError(f"sobel_size must be >= 3, got {self.sobel_size}")
        if self.min_object_size < 0 or self.min_marker_size < 0:
            raise ValueError("sizes must be >= 0")
        if not isinstance(self.blur, bool):
            raise ValueError(f"blur must be true or false, got {self.blur!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "post-processing parameters"):
        """Parameters from a saved dict; unknown keys or bad values -> BadInputError naming
        ``source`` (the file they came from)."""
        if not isinstance(data, dict):
            raise BadInputError(f"{source}: expected a mapping of post-processing parameters")
        data = dict(data)
        if "blur_sigma" in data and "blur" not in data:
            # before cellbench 0.1.x's OpenCV parity: a Gaussian of sigma blur_sigma (0 = none);
            # HoVer-Net's 3x3 blur is what a non-zero value stood for
            legacy = data.pop("blur_sigma")
            data["blur"] = isinstance(legacy, int | float) and legacy > 0
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadInputError(f"{source}: unknown post-processing parameter '{unknown[0]}'")
        try:
            if any(known[k] == "bool" and not isinstance(data[k], bool) for k in data):
                raise ValueError("blur must be true or false")
            values = {
                k: v if known[k] == "bool" else int(v) if known[k] == "int" else float(v)
                for k, v in data.items()
            }
            if any(known[k] == "int" and values[k] != data[k] for k in data):
                raise ValueError("expected an integer")
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{source}: {exc}") from exc


def _binomial(order: int) -> np.ndarray:
    return comb(order, np.arange(order + 1))


def _sobel_kernels(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(smoothing, derivative) 1-D kernels of OpenCV's Sobel of aperture ``size``: binomial
    coefficients of order size-1, and those of order size-2 convolved with [-1, 1]."""
    return _binomial(size - 1), np.convolve(_binomial(size - 2), [-1.0, 1.0])


def _cv2_ellipse(size: int) -> np.ndarray:
    """OpenCV's ``getStructuringElement(MORPH_ELLIPSE, (size, size))``."""
    r = size // 2
    out = np.zeros((size, size), dtype=bool)
    for i in range(size):
        dy = i - r
        dx = int(round(math.sqrt(r * r - dy * dy)))
        out[i, max(r - dx, 0) : min(r + dx + 1, size)] = True
    return out


CV2_BLUR_3 = np.array([0.25, 0.5, 0.25])  # cv2.getGaussianKernel(3, 0): OpenCV's fixed table


def _minmax(x: np.ndarray) -> np.ndarray:
    """``cv2.normalize(x, None, 0, 1, NORM_MINMAX, CV_32F)``, bit for bit: OpenCV computes
    ``x * scale + shift`` with scale and shift rounded to float32 and one final rounding to
    float32 (a constant map gives zeros, as in OpenCV)."""
    x = x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros(x.shape, np.float32)
    scale = 1.0 / (hi - lo)
    shift = float(np.float32(-lo * scale))
    return (x * float(np.float32(scale)) + shift).astype(np.float32)


def _cv2_opening(mask: np.ndarray, size: int) -> np.ndarray:
    """``cv2.morphologyEx(mask, MORPH_OPEN, ellipse)`` with OpenCV's default borders: erosion
    sees foreground beyond the image (no erosion from the border), dilation background."""
    if size <= 1:
        return mask.astype(bool)
    kernel = _cv2_ellipse(size)
    eroded = ndimage.binary_erosion(mask, structure=kernel, border_value=1)
    return ndimage.binary_dilation(eroded, structure=kernel, border_value=0)


def _cv2_blur3(x: np.ndarray) -> np.ndarray:
    """``cv2.GaussianBlur(x, (3, 3), 0)`` (reflect-101 borders)."""
    out = ndimage.correlate1d(x, CV2_BLUR_3, 0, mode="mirror")
    return ndimage.correlate1d(out, CV2_BLUR_3, 1, mode="mirror")


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labels whose area is below ``min_size`` set to 0 (one label-wise bincount)."""
    if min_size <= 0 or labels.max() == 0:
        return labels
    too_small = np.bincount(labels.ravel()) < min_size
    too_small[0] = False
    labels[too_small[labels]] = 0
    return labels


def _energy(hv: np.ndarray, size: int) -> np.ndarray:
    """max of the inverted, min-max scaled Sobel gradients of the scaled HV channels."""
    smooth, deriv = _sobel_kernels(size)
    # HoVer-Net: float32 maps, Sobel in float64 (CV_64F), scaled back to float32
    h = _minmax(hv[0]).astype(np.float64)
    v = _minmax(hv[1]).astype(np.float64)
    grad_x = ndimage.correlate1d(
        ndimage.correlate1d(h, smooth, 0, mode="mirror"), deriv, 1, mode="mirror"
    )
    grad_y = ndimage.correlate1d(
        ndimage.correlate1d(v, smooth, 1, mode="mirror"), deriv, 0, mode="mirror"
    )
    return np.maximum(1 - _minmax(grad_x), 1 - _minmax(grad_y))


def instance_map(np_prob: np.ndarray, hv: np.ndarray, params: PostProcParams) -> np.ndarray:
    """Instance map (H, W) int32, ids 1..K, from the nucleus probability and the HV maps."""
    blob = ndimage.label(np_prob >= params.np_threshold)[0]
    blob = _remove_small(blob, params.min_object_size) > 0
    if not blob.any():
        return np.zeros(np_prob.shape, dtype=np.int32)
    # float32 energies, then float64 as in HoVer-Net (its int32 foreground promotes them)
    energy = np.where(blob, _energy(hv, params.sobel_size).astype(np.float64), 0.0)
    # nuclei are mountains of (1 - energy): invert them into basins
    distance = (1.0 - energy) * blob
    surface = -(_cv2_blur3(distance) if params.blur else distance)
    marker = blob & (energy < params.marker_threshold)
    marker = ndimage.binary_fill_holes(marker)
    marker = _cv2_opening(marker, params.marker_open_size)
    markers = _remove_small(ndimage.label(marker)[0], params.min_marker_size)
    inst = watershed(surface, markers=markers, mask=blob)
    # compact ids 1..K (removed markers leave gaps)
    present = np.unique(inst)
    lut = np.zeros(int(present[-1]) + 1, dtype=np.int32)
    lut[present[present > 0]] = np.arange(1, int((present > 0).sum()) + 1)
    return lut[inst]


def nucleus_types(inst: np.ndarray, nt_prob: np.ndarray) -> dict[int, tuple[int, float]]:
    """``{id: (type 1..5, mean probability of that type over the nucleus)}``.

    ``nt_prob`` is (6, H, W) with channel 0 = background, or (5, H, W) with the types only.
    A nucleus takes the most frequent per-pixel type among its pixels (background votes
    ignored, lowest type on a tie); when every pixel votes background, the type of highest mean
    probability.
    """
    channels = (TYPE_CHANNELS - 1, TYPE_CHANNELS)
    if nt_prob.ndim != 3 or nt_prob.shape[0] not in channels or nt_prob.shape[1:] != inst.shape:
        raise ValueError(f"nt_prob must be (6 or 5, H, W) for {inst.shape}, got {nt_prob.shape}")
    k = int(inst.max())
    if k == 0:
        return {}
    probs = nt_prob.reshape(nt_prob.shape[0], -1).astype(np.float64)
    if probs.shape[0] == TYPE_CHANNELS - 1:  # types only: add an all-zero background channel
        probs = np.concatenate([np.zeros((1, probs.shape[1])), probs])
    labels = inst.ravel().astype(np.int64)
    pixel_type = probs.argmax(axis=0)
    c = TYPE_CHANNELS
    votes = np.bincount(labels * c + pixel_type, minlength=(k + 1) * c).reshape(k + 1, c)[:, 1:]
    area = np.bincount(labels, minlength=k + 1).astype(np.float64)
    mean_prob = np.stack([np.bincount(labels, probs[t], k + 1) for t in range(1, c)], axis=1)
    mean_prob /= np.maximum(area, 1)[:, None]
    chosen = np.where(votes.any(axis=1), votes.argmax(axis=1), mean_prob.argmax(axis=1))
    return {
        i: (int(chosen[i]) + 1, float(mean_prob[i, chosen[i]]))
        for i in range(1, k + 1)
        if area[i] > 0
    }


def postprocess_tile(
    np_prob: np.ndarray,
    hv: np.ndarray,
    nt_prob: np.ndarray | None = None,
    params: PostProcParams | None = None,
) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """One tile's nuclei: ``(inst (H, W) int32 ids 1..K, {id: (type 1..5, mean probability)})``.

    ``np_prob`` (H, W): nucleus probability; ``hv`` (2, H, W): channel 0 = x (horizontal),
    1 = y (vertical), as in the store; ``nt_prob`` (6 or 5, H, W) type probabilities or None
    (then the type dict is empty).
    """
    params = params or PostProcParams()
    np_prob = np.asarray(np_prob)
    hv = np.asarray(hv)
    if np_prob.ndim != 2 or hv.shape != (2, *np_prob.shape):
        raise ValueError(
            f"expected np_prob (H, W) and hv (2, H, W), got {np_prob.shape} and {hv.shape}"
        )
    inst = instance_map(np_prob, hv, params)
    types = {} if nt_prob is None else nucleus_types(inst, np.asarray(nt_prob))
    return inst, types


def type_map(inst: np.ndarray, types: dict[int, tuple[int, float]]) -> np.ndarray:
    """The per-pixel type map (uint8, 0 = background) of an instance map and its type dict
    (nuclei missing from the dict get 0)."""
    lut = np.zeros(int(inst.max()) + 1, dtype=np.uint8)
    for nucleus, (kind, _) in types.items():
        if nucleus < len(lut):
            lut[nucleus] = kind
    return lut[inst]


def _postprocess_chunk(task) -> list[tuple[np.ndarray, dict[int, tuple[int, float]]]]:
    np_prob, hv, nt_prob, params = task
    return [
        postprocess_tile(np_prob[i], hv[i], None if nt_prob is None else nt_prob[i], params)
        for i in range(len(np_prob))
    ]


def iter_postprocess(
    np_prob: np.ndarray,
    hv: np.ndarray,
    nt_prob: np.ndarray | None = None,
    params: PostProcParams | None = None,
    workers: int = 1,
    chunk: int = 16,
    pool: TilePool | None = None,
) -> Iterator[tuple[np.ndarray, dict[int, tuple[int, float]]]]:
    """``postprocess_tile`` over stacks (N, H, W), (N, 2, H, W), (N, C, H, W), yielded tile by
    tile in order. With ``workers > 1`` (or a ``pool``), chunks of ``chunk`` tiles go to a
    process pool; at most 2 x workers chunks are in flight, so memory is bounded by the chunk,
    not by N (the arrays may be memory-mapped)."""
    yield from iter_postprocess_batches([(np_prob, hv, nt_prob)], params, workers, chunk, pool)


def iter_postprocess_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    params: PostProcParams | None = None,
    workers: int = 1,
    chunk: int = 16,
    pool: TilePool | None = None,
) -> Iterator[tuple[np.ndarray, dict[int, tuple[int, float]]]]:
    """``iter_postprocess`` over a stream of ``(np_prob, hv, nt_prob)`` batches (a model's
    predictions), every batch's chunks fed to one pool: the next batch is read (predicted) while
    the workers post-process the chunks before it."""
    params = params or PostProcParams()

    def tasks():
        for np_prob, hv, nt_prob in batches:
            if len(hv) != len(np_prob) or (nt_prob is not None and len(nt_prob) != len(np_prob)):
                raise ValueError("np_prob, hv and nt_prob must hold the same number of tiles")
            for start, stop in chunk_bounds(len(np_prob), chunk):
                yield (
                    np.asarray(np_prob[start:stop]),
                    np.asarray(hv[start:stop]),
                    None if nt_prob is None else np.asarray(nt_prob[start:stop]),
                    params,
                )

    for results in map_chunks(_postprocess_chunk, tasks(), workers, pool=pool):
        yield from results


def postprocess_tiles(
    np_prob: np.ndarray,
    hv: np.ndarray,
    nt_prob: np.ndarray | None = None,
    params: PostProcParams | None = None,
    workers: int = 1,
    chunk: int = 16,
) -> list[tuple[np.ndarray, dict[int, tuple[int, float]]]]:
    """``iter_postprocess`` collected in a list."""
    return list(iter_postprocess(np_prob, hv, nt_prob, params, workers, chunk))
