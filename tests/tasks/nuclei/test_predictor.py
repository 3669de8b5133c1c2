"""``cellbench.load_model`` / ``cellbench.predict`` for nuclei runs: instances, types, centroids
of one image, tiles of the training size or larger images stitched."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]


def _test_tile(nuclei_run, tile: int = 0) -> np.ndarray:
    from cellbench.data.store import open_fold

    return np.array(open_fold(nuclei_run.store, 3).images[tile])


def test_predict_returns_instances_types_and_centroids_of_one_tile(nuclei_run):
    import cellbench
    from cellbench.tasks.nuclei.postproc import postprocess_tile
    from cellbench.tasks.nuclei.predictor import NucleiModel, predicted_maps

    model = cellbench.load_model("dig", runs_dir=nuclei_run.runs)
    assert isinstance(model, NucleiModel) and model.tile_size == 64
    assert model.postproc_source.startswith("default")
    image = _test_tile(nuclei_run)
    p = cellbench.predict(model, image)
    assert p.instances.shape == (64, 64) and p.instances.dtype == np.int32
    k = int(p.instances.max())
    assert p.count == k == len(p.probabilities) == len(p.centroids)
    assert set(np.unique(p.instances)) == set(range(k + 1))  # compact ids 1..K
    assert (
        all(1 <= t <= 5 for t in p.types)
        and ((p.probabilities >= 0) & (p.probabilities <= 1)).all()
    )
    for i in range(k):  # each centroid is the mean pixel position of its nucleus
        rows, cols = np.nonzero(p.instances == i + 1)
        assert p.centroids[i] == pytest.approx([cols.mean(), rows.mean()])
    # the same nuclei as post-processing the model's maps with the run's parameters
    maps = predicted_maps(model, image)
    inst, _ = postprocess_tile(*maps, model.params)
    assert (inst == p.instances).all()
    assert (p.type_map() > 0).sum() == (p.instances > 0).sum()


def test_an_online_features_run_loads_its_backbone_on_the_device_asked(nuclei_run, tmp_path):
    """The saved config says train.device=meta: the backbone must follow device=, and the run's
    checkpoint (an OnlineFeatureDecoder's, keys decoder.*) loads."""
    import torch

    import cellbench
    from tests.helpers_nuclei_run import make_online_run

    online = make_online_run(nuclei_run, tmp_path)
    model = cellbench.load_model("online", runs_dir=online.runs, device="cpu")
    backbone = model.model.backbone
    assert backbone.device == torch.device("cpu")
    assert {p.device.type for p in backbone.model.parameters()} == {"cpu"}
    p = cellbench.predict(model, _test_tile(nuclei_run))
    assert p.instances.shape == (64, 64)


def test_a_larger_image_is_tiled_and_keeps_its_shape_and_a_path_works(nuclei_run, tmp_path):
    from PIL import Image

    import cellbench

    model = cellbench.load_model("dig", runs_dir=nuclei_run.runs)
    tiles = [_test_tile(nuclei_run, i) for i in range(4)]
    big = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)[:100, :90]
    p = cellbench.predict(model, big)
    assert p.instances.shape == (100, 90) and p.nucleus_probability.shape == (100, 90)
    # the top-left tile of the stitched image sees exactly the pixels of test tile 0
    single = cellbench.predict(model, tiles[0])
    assert np.allclose(p.nucleus_probability[:64, :64], single.nucleus_probability, atol=1e-5)
    path = tmp_path / "tile.png"
    Image.fromarray(tiles[1]).save(path)
    assert cellbench.predict(model, str(path)).instances.shape == (64, 64)
    small = cellbench.predict(model, tiles[0][:40, :30])  # smaller than a tile: padded
    assert small.instances.shape == (40, 30)
