"""--overfit-small: a working pipeline memorises a few examples; a broken one is reported."""

from __future__ import annotations

from cellbench.engine.overfit import overfit_small
from cellbench.engine.session import TrainRequest, overfit
from cellbench.runs.events import read_events
from cellbench.tasks import get_task


def test_overfit_small_passes_on_a_working_pipeline(tmp_path, tiny_overrides):
    request = TrainRequest(
        overrides=tiny_overrides("train.lr=0.01", "data.hflip=0.5"), runs_dir=tmp_path / "runs"
    )
    paths, result = overfit(request, 16)
    assert result.passed, result
    assert result.final_loss < result.threshold and result.examples == 16
    assert result.accuracy == 1.0
    assert paths.name == "simple_cnn-classify-overfit"
    end = read_events(paths.events, "run_end")[-1]
    assert end["status"] == "completed"
    check = next(w for w in read_events(paths.events, "warning") if w["check"] == "overfit_small")
    assert check["message"].startswith("passed")


def test_overfit_small_fails_when_the_model_cannot_learn(tiny_config):
    # lr 0: nothing moves, the budget runs out and the check says so
    config = tiny_config("train.lr=0", "checks.overfit_max_steps=5")
    result, _ = overfit_small(config, get_task("classify"), 8)
    assert not result.passed and result.steps == 5


def test_overfit_config_drops_regularisation_and_augmentation(tiny_config):
    config = tiny_config("train.mixup=0.5", "train.weight_decay=0.1", "train.ema=true")
    plain = get_task("classify").overfit_config(config)
    assert not plain.data.augment and plain.train.weight_decay == 0 and plain.train.mixup == 0
    assert not plain.train.ema and config.train.ema  # the original is untouched
