"""The rule that keeps each object once: a tile keeps the objects whose centroid lies in its
core, in slide coordinates; one reaching the tile's edge is flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellbench.tasks.nuclei.export.detections import instance_detections
from cellbench.tile_jobs import core_detections


def _inst():
    inst = np.zeros((64, 64), np.int32)
    inst[20:26, 20:26] = 1  # centroid (23, 23): in the core
    inst[10:14, 30:34] = 2  # centroid (32, 12): in the margin above the core
    inst[40:52, 44:64] = 3  # centroid (54, 46): right margin, touches the tile edge
    inst[44:50, 12:20] = 4  # centroid (16, 47): on the core's left edge (inclusive)
    return inst


def test_only_objects_centred_in_the_core_are_kept_in_slide_coordinates():
    types = {1: (1, 0.9), 2: (2, 0.8), 3: (3, 0.7), 4: (5, 0.6)}
    kept = core_detections(
        lambda payload, core: instance_detections(*payload),  # every nucleus: filtered here
        (_inst(), types),
        ((16, 16, 48, 48), (1000.0, 2000.0)),
        scale=2.0,
        size=64,
    )
    assert [d["cls"] for d in kept] == ["Neoplastic", "Epithelial"]
    first = kept[0]
    assert (first["x"], first["y"]) == pytest.approx((1000 + 23 * 2, 2000 + 23 * 2))
    assert first["area"] == pytest.approx(36 * 4)
    ring = json.loads(first["geometry"])["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert min(xs) == pytest.approx(1000 + 20 * 2, abs=1.1) and max(xs) <= 1000 + 26 * 2
    assert min(ys) == pytest.approx(2000 + 20 * 2, abs=1.1)
    assert not any(d["touches_edge"] for d in kept)


def test_an_object_reaching_the_tile_edge_is_flagged():
    kept = core_detections(
        lambda inst, core: instance_detections(inst, core=core),
        _inst(),
        ((0, 0, 64, 64), (0.0, 0.0)),
        scale=1.0,
        size=64,
    )
    assert len(kept) == 4
    assert [d["touches_edge"] for d in kept] == [False, False, True, False]
    assert kept[0]["cls"] == "Nucleus" and np.isnan(kept[0]["probability"])


def test_a_postprocessor_given_the_core_outlines_only_its_nuclei(monkeypatch):
    """``instance_detections`` with the core gives the same detections the pipeline keeps from
    all of them, and outlines no other nucleus."""
    from cellbench.tasks.nuclei.export import detections

    types = {1: (1, 0.9), 2: (2, 0.8), 3: (3, 0.7), 4: (5, 0.6)}
    job = ((16, 16, 48, 48), (1000.0, 2000.0))
    everything = core_detections(
        lambda payload, core: instance_detections(*payload), (_inst(), types), job, 2.0, 64
    )
    outlined = []
    real_rings = detections.nucleus_rings

    def recording_rings(inst, ids=None):
        outlined.append(None if ids is None else sorted(int(i) for i in ids))
        return real_rings(inst, ids=ids)

    monkeypatch.setattr(detections, "nucleus_rings", recording_rings)
    own = core_detections(
        lambda payload, core: instance_detections(*payload, core=core),
        (_inst(), types),
        job,
        2.0,
        64,
    )
    assert own == everything
    assert outlined == [[1, 4]]
