"""The Python inference API on a real tiny run: cellbench.load_model / predict / predict_many."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cellbench
from cellbench.errors import BadInputError
from cellbench.inference import LoadedModel, Prediction, load_model, predict, predict_many
from cellbench.tasks.classify.evaluation import evaluate_run
from tests.helpers_eval import copy_runs, edit_checkpoint, trained_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    template = trained_run(tmp_path_factory)
    return copy_runs(template, tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="module")
def loaded(runs) -> LoadedModel:
    root, _ = runs
    return load_model("tiny", runs_dir=root)


@pytest.fixture(scope="module")
def val_predictions(runs):
    """(source path, predicted label) of every val image, as `evaluate_run` saw them."""
    _, run = runs
    evaluate_run(run, split="val")
    with open(run.eval_dir / "predictions_val-best.csv", newline="") as fh:
        return [(r["source"], r["predicted"], float(r["probability"])) for r in csv.DictReader(fh)]


def test_import_cellbench_stays_torch_free():
    code = "import sys, cellbench; assert 'torch' not in sys.modules; print(cellbench.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == cellbench.__version__


def test_lazy_api_is_the_inference_module():
    assert cellbench.load_model is load_model
    assert cellbench.predict is predict
    assert cellbench.predict_many is predict_many
    with pytest.raises(AttributeError):
        _ = cellbench.no_such_thing


def test_loaded_model_is_ready(loaded):
    assert sorted(loaded.classes) == ["circle", "cross", "square", "triangle"]
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.device == torch.device("cpu")
    assert loaded.checkpoint_path.name == "best.pt"
    assert loaded.epoch >= 1 and loaded.ema is False


def test_predictions_agree_with_evaluation(loaded, val_predictions):
    paths = [p for p, _, _ in val_predictions]
    predictions = predict_many(loaded, paths, batch_size=5)  # batches that don't divide N
    assert [p.label for p in predictions] == [label for _, label, _ in val_predictions]
    for p, (_, _, probability) in zip(predictions, val_predictions, strict=True):
        assert p.probability == pytest.approx(probability, abs=1e-5)


def test_path_pil_and_array_inputs_agree(loaded, val_predictions):
    path = val_predictions[0][0]
    by_path = predict(loaded, path)
    pil = Image.open(path).convert("RGB")
    by_pil = predict(loaded, pil)
    by_array = cellbench.predict(loaded, np.asarray(pil))
    assert isinstance(by_path, Prediction)
    assert by_path.label == by_pil.label == by_array.label
    assert by_path.probabilities == pytest.approx(by_array.probabilities)
    assert sum(by_path.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert by_path.top(2)[0] == (by_path.label, by_path.probability)


def test_grayscale_and_rgba_inputs_are_converted(loaded, val_predictions):
    pil = Image.open(val_predictions[0][0])
    for image in (pil.convert("L"), pil.convert("RGBA"), np.asarray(pil.convert("L"))):
        assert predict(loaded, image).label in loaded.classes


def test_run_references(runs):
    root, run = runs
    by_id = load_model(1, runs_dir=root)
    by_folder = load_model(run.root)
    by_file = load_model(run.last_checkpoint)
    assert by_id.checkpoint_path == by_folder.checkpoint_path == run.best_checkpoint
    assert by_file.checkpoint_path == run.last_checkpoint
    assert (
        load_model("tiny", runs_dir=root, checkpoint="last").checkpoint_path == run.last_checkpoint
    )


def test_ema_weights_are_used_when_the_run_evaluated_on_ema(runs, tmp_path):
    _, run = copy_runs(runs[0], tmp_path)
    state = torch.load(run.best_checkpoint, weights_only=True)
    ema = {
        k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    edit_checkpoint(run.best_checkpoint, ema=ema, config={"train": {"eval_ema": True}})
    loaded = load_model(run.root)
    assert loaded.ema is True
    assert all(float(p.abs().sum()) == 0 for p in loaded.model.parameters())
    assert load_model(run.root, use_ema=False).ema is False


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((8, 8, 2), dtype=np.uint8), "HxW or HxWx3"),
        ("missing.png", "missing.png: image not found"),
        (42, "expected a path, a PIL image or a numpy array"),
    ],
)
def test_bad_images_are_named(loaded, image, message):
    with pytest.raises(BadInputError, match=message):
        predict(loaded, image)


def test_unreadable_file_is_named(loaded, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="broken.png: cannot read image"):
        predict(loaded, bad)


def test_not_a_classification_checkpoint(runs, tmp_path):
    _, run = copy_runs(runs[0], tmp_path)
    # nuclei runs: tests/tasks/nuclei/test_predictor.py
    edit_checkpoint(run.best_checkpoint, task="detect")
    with pytest.raises(BadInputError, match="'detect' run"):
        load_model(run.root)


def test_a_path_loads_that_run_even_when_runs_dir_has_one_of_the_same_name(runs, tmp_path):
    here_root, _ = runs
    other_root, other = copy_runs(here_root, tmp_path / "other")
    loaded = load_model(str(other.root) + "/", runs_dir=here_root)
    assert loaded.checkpoint_path == other.best_checkpoint
    with pytest.raises(BadInputError, match="not a run folder"):
        load_model(other.checkpoints, runs_dir=here_root)
