"""The batched Douglas-Peucker equals scikit-image's ``approximate_polygon`` point for point: on
marching-squares rings (what the GeoJSON writers simplify), on random chains with repeated and
rounded coordinates (ties between farthest points), closed or open, at several tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from cellbench.data.synth import synth_tile
from cellbench.tasks.nuclei.export import geojson
from cellbench.tasks.nuclei.export.simplify import approximate_polygons


def _blob_rings(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    rings = []
    for _ in range(count):
        blob = ndimage.gaussian_filter(rng.random((24, 24)), rng.uniform(1.5, 4)) > 0.5
        rings += find_contours(np.pad(blob, 1).astype(np.float32), 0.5)
    return rings


def _random_chains(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    chains = []
    for k in range(count):
        n = int(rng.integers(1, 60))
        # rounded coordinates make equal distances, so the first-farthest rule is exercised
        chain = np.round(rng.normal(size=(n, 2)) * rng.uniform(0.1, 20), int(rng.integers(0, 3)))
        if k % 3 == 0:
            chain[-1] = chain[0]  # closed, as marching squares' rings are
        chains.append(chain)
    return chains


@pytest.mark.parametrize("tolerance", [0.01, 0.25, 1.0, 3.0])
def test_equals_scikit_image_on_every_chain(tolerance):
    rng = np.random.default_rng(7)
    chains = _blob_rings(rng, 300) + _random_chains(rng, 400)
    got = approximate_polygons(chains, tolerance)
    assert len(got) == len(chains)
    for chain, mine in zip(chains, got, strict=True):
        reference = approximate_polygon(chain, tolerance)
        assert mine.shape == reference.shape
        assert mine.tobytes() == reference.tobytes()


def test_no_tolerance_or_no_chain_returns_them_unchanged():
    chain = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert approximate_polygons([chain], 0)[0] is chain
    assert approximate_polygons([], 0.25) == []


def test_two_point_and_straight_chains():
    two = np.array([[0.0, 0.0], [3.0, 4.0]])
    straight = np.array([[0.0, float(k)] for k in range(10)])
    got = approximate_polygons([two, straight], 0.25)
    assert got[0].tolist() == two.tolist()
    assert got[1].tolist() == [[0.0, 0.0], [0.0, 9.0]]


def test_nucleus_rings_are_those_of_simplifying_ring_by_ring(monkeypatch):
    """The GeoJSON rings of real-looking nuclei (a generated tile's) are unchanged by simplifying
    every ring of the image in one pass."""
    _, masks = synth_tile(np.random.default_rng(3), "Colon", 256)
    inst = np.zeros((256, 256), np.int32)
    for channel in range(5):
        for value in np.unique(masks[..., channel])[1:]:
            inst[masks[..., channel] == value] = inst.max() + 1
    assert inst.max() > 20
    batched = geojson.nucleus_rings(inst, offset=(1000.0, 2000.0))
    monkeypatch.setattr(
        geojson,
        "approximate_polygons",
        lambda chains, tolerance: [approximate_polygon(c, tolerance) for c in chains],
    )
    assert geojson.nucleus_rings(inst, offset=(1000.0, 2000.0)) == batched
