"""GeoJSON of nuclei: parses as JSON, has QuPath's properties, and its polygons rasterise back
to the nuclei they came from."""

from __future__ import annotations

import json

import numpy as np
from skimage.draw import polygon

from cellbench.tasks.nuclei.export.geojson import nuclei_geojson, write_geojson
from tests.metrics.conftest import generated_maps


def _rasterise(rings, shape, offset=(0.0, 0.0)) -> np.ndarray:
    """Pixels whose centres fall inside the rings (QuPath: centre of pixel (r, c) is
    (c + 0.5, r + 0.5))."""
    out = np.zeros(shape, dtype=bool)
    for ring in rings:
        xy = np.array(ring)
        rr, cc = polygon(xy[:, 1] - 0.5 - offset[1], xy[:, 0] - 0.5 - offset[0], shape)
        out[rr, cc] = True
    return out


def _rings(geometry):
    if geometry["type"] == "Polygon":
        return [geometry["coordinates"][0]]
    return [poly[0] for poly in geometry["coordinates"]]


def test_polygons_rasterise_back_to_the_instances(tmp_path):
    inst, types_map, _ = generated_maps(4, 128, seed=5)
    checked = 0
    for tile in range(len(inst)):
        ids = [int(i) for i in np.unique(inst[tile]) if i]
        types = {i: (int(types_map[tile][inst[tile] == i][0]), 0.9) for i in ids}
        path = tmp_path / f"tile{tile}.geojson"
        write_geojson(path, nuclei_geojson(inst[tile], types))
        collection = json.loads(path.read_text())  # a plain JSON parser reads it
        assert collection["type"] == "FeatureCollection"
        assert len(collection["features"]) == len(ids)
        for feature in collection["features"]:
            props = feature["properties"]
            nucleus = props["nucleus_id"]
            assert props["objectType"] == "detection"
            assert props["classification"]["name"] in {
                "Neoplastic",
                "Inflammatory",
                "Connective",
                "Dead",
                "Epithelial",
            }
            assert len(props["classification"]["color"]) == 3
            assert props["measurements"]["type probability"] == 0.9
            for ring in _rings(feature["geometry"]):
                assert ring[0] == ring[-1] and len(ring) >= 4  # closed rings
            truth = inst[tile] == nucleus
            drawn = _rasterise(_rings(feature["geometry"]), truth.shape)
            filled = truth | drawn  # holes are not drawn: compare with the filled nucleus
            iou = (truth & drawn).sum() / filled.sum()
            assert iou >= 0.9, (tile, nucleus, iou)
            checked += 1
    assert checked > 20


def test_offset_moves_the_polygons_into_a_larger_image():
    inst = np.zeros((32, 32), dtype=np.int32)
    inst[10:16, 4:12] = 1
    (feature,) = nuclei_geojson(inst, offset=(100.0, 200.0))["features"]
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert ring[:, 0].min() >= 104 and ring[:, 0].max() <= 112
    assert ring[:, 1].min() >= 210 and ring[:, 1].max() <= 216
    drawn = _rasterise([ring.tolist()], (32, 32), offset=(100.0, 200.0))
    assert (drawn == (inst == 1)).all()
    # no type: still a valid, named classification
    assert feature["properties"]["classification"]["name"] == "Nucleus"


def test_a_nucleus_in_two_pieces_is_a_multipolygon_and_empty_tiles_give_no_feature():
    inst = np.zeros((20, 20), dtype=np.int32)
    inst[2:6, 2:6] = 1
    inst[12:18, 12:18] = 1
    (feature,) = nuclei_geojson(inst)["features"]
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert len(feature["geometry"]["coordinates"]) == 2
    assert nuclei_geojson(np.zeros((8, 8), dtype=np.int32))["features"] == []
