"""Run-level rules: resume is exact, existing runs need --resume/--fresh, --init-from, --fresh."""

from __future__ import annotations

import pytest
import torch

from cellbench.engine.checkpoint import weights_fingerprint
from cellbench.engine.session import TrainRequest, train
from cellbench.engine.trainer import Callback
from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore


class Crash(Callback):
    """Dies at the start of an epoch, like a process killed between two epochs."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _request(tmp_path, **kwargs) -> TrainRequest:
    return TrainRequest(runs_dir=tmp_path / "runs", **kwargs)


# every source of randomness the engine restores on resume: augmentation (torch RNG), dropout,
# mixup (numpy RNG), EMA and the warmup + cosine schedule
RANDOM_RECIPE = (
    "train.epochs=4",
    "data.hflip=0.5",
    "model.drop_rate=0.3",
    "train.mixup=0.4",
    "train.ema=true",
    "train.ema_decay=0.8",
    "train.warmup_epochs=1",
)


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, tiny_overrides):
    overrides = tiny_overrides(*RANDOM_RECIPE)
    whole, _ = train(_request(tmp_path, overrides=overrides, run="whole"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_request(tmp_path, overrides=overrides, run="cut"), callbacks=[Crash(3)])
    cut = RunStore(tmp_path / "runs").resolve("cut")
    assert torch.load(cut.last_checkpoint, weights_only=True)["epoch"] == 2

    paths, result = train(_request(tmp_path, run="cut", resume=True))
    assert result.status == "completed"
    assert paths.history.read_text() == whole.history.read_text()
    a = torch.load(whole.last_checkpoint, weights_only=True)
    b = torch.load(paths.last_checkpoint, weights_only=True)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    start = read_events(paths.events, "run_start")[-1]
    assert start["resumed"] is True and start["start_epoch"] == 2


def test_resume_of_a_completed_run_changes_nothing(tmp_path, tiny_overrides):
    paths, _ = train(_request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="done"))
    before = paths.events.read_text()
    _, result = train(_request(tmp_path, run="done", resume=True))
    assert result.status == "completed" and "already completed" in result.reason
    assert paths.events.read_text() == before


def test_existing_run_needs_resume_or_fresh(tmp_path, tiny_overrides):
    overrides = tiny_overrides("train.epochs=1")
    train(_request(tmp_path, overrides=overrides, run="taken"))
    with pytest.raises(RunConflict, match="--resume .* --fresh"):
        train(_request(tmp_path, overrides=overrides, run="taken"))
    with pytest.raises(UsageError, match="saved config"):
        train(_request(tmp_path, overrides=overrides, run="taken", resume=True))
    with pytest.raises(BadInputError, match="no run"):
        train(_request(tmp_path, run="nope", resume=True))


def test_fresh_or_resume_of_a_misspelt_run_is_refused_with_did_you_mean(tmp_path, tiny_overrides):
    overrides = tiny_overrides("train.epochs=1")
    train(_request(tmp_path, overrides=overrides, run="digestive"))
    for flag in ("fresh", "resume"):
        with pytest.raises(BadInputError, match="did you mean 'digestive'"):
            train(_request(tmp_path, run="digestiv", **{flag: True}))
    # nothing was created for the typo
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == ["0001-digestive"]


def test_default_names_never_collide(tmp_path, tiny_overrides):
    overrides = tiny_overrides("train.epochs=1")
    first, _ = train(_request(tmp_path, overrides=overrides))
    second, _ = train(_request(tmp_path, overrides=overrides))
    assert (first.name, second.name) == ("simple_cnn-classify", "simple_cnn-classify-2")


def test_fresh_deletes_outputs_records_them_and_starts_from_new_weights(tmp_path, tiny_overrides):
    overrides = tiny_overrides("train.epochs=2")
    paths, _ = train(_request(tmp_path, overrides=overrides, run="again"))
    (paths.eval_dir).mkdir()
    (paths.eval_dir / "report.json").write_text("{}")
    old = torch.load(paths.last_checkpoint, weights_only=True)

    # --fresh takes the saved config, command-line options override it
    _, result = train(_request(tmp_path, overrides=["train.epochs=1"], run="again", fresh=True))
    assert result.status == "completed" and result.epochs == 1
    start = read_events(paths.events, "run_start")[-1]
    removed = set(start["reset"]["removed"])
    assert {"checkpoints", "history.csv", "metrics.json", "eval"} <= removed
    assert start["reset"]["bytes"] > 0 and "gc_collected" in start["reset"]
    assert not paths.eval_dir.exists()
    new = torch.load(paths.last_checkpoint, weights_only=True)
    # the same seed gives the same initial weights: a fresh start is a reproducible start
    assert new["init_fingerprint"] == old["init_fingerprint"] and new["epoch"] == 1
    assert new["config"]["train"]["epochs"] == 1
    assert new["config"]["model"]["args"] == {"channels": [8, 16], "hidden": 32}


def test_init_from_loads_the_other_runs_best_weights(tmp_path, tiny_overrides):
    source, _ = train(_request(tmp_path, overrides=tiny_overrides("train.epochs=2"), run="src"))
    best = torch.load(source.best_checkpoint, weights_only=True)["model"]

    loaded = {}

    class Capture(Callback):
        def on_train_start(self, trainer):
            loaded["fp"] = weights_fingerprint(trainer.c.model)
            loaded["start"] = {k: v.clone() for k, v in trainer.c.model.state_dict().items()}

    paths, _ = train(
        _request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="dst", init_from="src"),
        callbacks=[Capture()],
    )
    assert all(torch.equal(best[k], loaded["start"][k]) for k in best)
    start = read_events(paths.events, "run_start")[0]
    assert start["init_from"] == source.root.name
    assert start["init_fingerprint"] == loaded["fp"]


def test_fresh_with_bad_options_keeps_the_old_run(tmp_path, tiny_overrides):
    paths, _ = train(_request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="keep"))
    before = {p.name: p.read_bytes() for p in paths.checkpoints.iterdir()}
    history = paths.history.read_text()
    typo = ["data.path=/nonexistent/shapes"]
    with pytest.raises(BadInputError) as info:
        train(_request(tmp_path, overrides=typo, run="keep", fresh=True))
    assert info.value.exit_code == 3 and "/nonexistent/shapes" in str(info.value)
    assert {p.name: p.read_bytes() for p in paths.checkpoints.iterdir()} == before
    assert paths.history.read_text() == history


def test_init_from_leaves_another_class_count_head_new_and_says_so(tmp_path, tiny_overrides):
    source, _ = train(_request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="four"))
    best = torch.load(source.best_checkpoint, weights_only=True)["model"]
    three = tiny_overrides("train.epochs=1", "data.classes=[circle, cross, square]")
    loaded = {}

    class Capture(Callback):
        def on_train_start(self, trainer):
            loaded.update({k: v.clone() for k, v in trainer.c.model.state_dict().items()})

    paths, _ = train(
        _request(tmp_path, overrides=three, run="three", init_from="four"), callbacks=[Capture()]
    )
    assert torch.equal(loaded["fc1.weight"], best["fc1.weight"])  # the backbone came over
    assert loaded["fc.weight"].shape[0] == 3  # the head is new
    messages = [w["message"] for w in read_events(paths.events, "warning")]
    assert any("fc.weight" in m and "dropped" in m for m in messages)


def test_init_from_another_architecture_is_refused(tmp_path, tiny_overrides):
    train(_request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="small"))
    wider = tiny_overrides("train.epochs=1", "model.args={channels: [8, 16], hidden: 48}")
    with pytest.raises(BadInputError, match="'fc1.weight' has shape") as info:
        train(_request(tmp_path, overrides=wider, run="wide", init_from="small"))
    assert "--init-from" in str(info.value) and "\n" not in str(info.value)
    assert RunStore(tmp_path / "runs").find("wide") is None  # refused before the folder


def test_init_from_is_refused_with_resume(tmp_path, tiny_overrides):
    train(_request(tmp_path, overrides=tiny_overrides("train.epochs=1"), run="a"))
    with pytest.raises(UsageError, match="--init-from"):
        train(_request(tmp_path, run="a", resume=True, init_from="a"))


def test_saved_config_holds_absolute_data_path_so_the_run_works_from_any_folder(
    tmp_path, tiny_overrides, shapes_dir, monkeypatch
):
    from cellbench.config import read_yaml
    from cellbench.inference import load_model, predict

    monkeypatch.chdir(shapes_dir.parent)
    overrides = [o for o in tiny_overrides("train.epochs=1") if not o.startswith("data.path=")]
    request = TrainRequest(
        overrides=[f"data.path={shapes_dir.name}", *overrides],
        runs_dir=tmp_path / "runs",
        run="relative",
    )
    paths, _ = train(request)
    assert read_yaml(paths.config)["data"]["path"] == str(shapes_dir.resolve())
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved config still finds its data
    image = next((shapes_dir / "circle").glob("*.png"))
    loaded = load_model("relative", runs_dir=tmp_path / "runs")
    assert predict(loaded, image).label in loaded.classes
    from cellbench.tasks.classify.evaluation import evaluate_run

    assert "accuracy" in evaluate_run(paths, split="val")["metrics"]


def test_fresh_on_a_path_retrains_that_folder_not_the_same_name_here(tmp_path, tiny_overrides):
    other, _ = train(
        TrainRequest(
            runs_dir=tmp_path / "other", overrides=tiny_overrides("train.epochs=1"), run="exp"
        )  # fmt: skip
    )
    here = RunStore(tmp_path / "here").create("exp")  # ./runs/0001-exp of this project
    here.checkpoints.mkdir()
    here.last_checkpoint.write_bytes(b"mine")
    _, result = train(
        TrainRequest(runs_dir=tmp_path / "here", run=str(other.root) + "/", fresh=True)
    )
    assert result.status == "completed"
    starts = read_events(other.events, "run_start")
    assert len(starts) == 2 and "checkpoints" in starts[-1]["reset"]["removed"]
    assert here.last_checkpoint.read_bytes() == b"mine" and not here.events.exists()
    with pytest.raises(BadInputError, match="no such folder"):
        train(TrainRequest(runs_dir=tmp_path / "here", run=str(tmp_path / "nope"), resume=True))
