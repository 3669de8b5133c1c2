"""``load_model``/``predict`` on an organ run: image -> backbone -> head -> temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cellbench
from cellbench.data.store import open_fold
from cellbench.engine.session import TrainRequest, train
from cellbench.errors import BadInputError


@pytest.fixture
def organ_run(organ_features, tmp_path):
    sets = ["task=organ", f"data.features={organ_features}", "organ.target=family"]
    sets += ["train.epochs=3", "train.amp=off"]
    paths, result = train(TrainRequest(overrides=sets, runs_dir=tmp_path))
    assert result.status == "completed"
    return paths


def test_predicting_an_image_matches_the_head_on_its_stored_features(organ_run, organ_features):
    store = organ_features.parent.parent
    image = np.asarray(open_fold(store, 2).images[5])
    path = organ_run.root / "tile.png"
    Image.fromarray(image).save(path)
    loaded = cellbench.load_model(organ_run.root)
    prediction = cellbench.predict(loaded, path)
    # the same tile through the stored CLS (float16) and the checkpoint's head, by hand
    metrics = json.loads(organ_run.metrics.read_text())
    temperature = metrics["calibration"]["temperature"]
    state = torch.load(organ_run.best_checkpoint, weights_only=True)
    head = loaded.model.head
    head.load_state_dict(state["model"])
    cls = torch.from_numpy(np.load(organ_features / "fold2" / "cls.npy")[5].astype(np.float32))
    expected = torch.softmax(head(cls[None]) / temperature, dim=1)[0]
    assert loaded.model.temperature == pytest.approx(temperature)
    got = torch.tensor([prediction.probabilities[c] for c in loaded.classes])
    torch.testing.assert_close(got, expected, atol=0.02, rtol=0)
    assert prediction.label == loaded.classes[int(expected.argmax())]


def test_backbone_weights_changed_since_extraction_are_refused(
    fx_store, tiny_vit, tiny_vit_weights, tmp_path
):
    from safetensors.torch import load_file, save_file

    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    root, _ = extract_features(
        fx_store, build_backbone(str(tiny_vit), tiny_vit_weights, device="cpu")
    )
    sets = ["task=organ", f"data.features={root}", "organ.target=family", "train.epochs=1"]
    paths, _ = train(TrainRequest(overrides=sets, runs_dir=tmp_path / "runs"))
    assert cellbench.load_model(paths.root).classes  # same weights: loads
    weights = load_file(str(tiny_vit_weights))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(tiny_vit_weights))  # replaced file
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        cellbench.load_model(paths.root)
