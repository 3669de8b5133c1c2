"""The training loop: outputs, determinism, checks that stop or warn, early stop, freeze, Ctrl-C."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from cellbench.engine.history import read_history
from cellbench.engine.session import TrainRequest, train
from cellbench.engine.trainer import Callback
from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore


def _train(tmp_path, overrides, name="r", callbacks=()):
    request = TrainRequest(overrides=overrides, run=name, runs_dir=tmp_path / "runs")
    return train(request, callbacks=callbacks)


def test_run_outputs_follow_the_contract(tmp_path, tiny_overrides):
    paths, result = _train(tmp_path, tiny_overrides())
    assert result.status == "completed"
    assert paths.config.is_file() and paths.metrics.is_file()
    rows = read_history(paths.history)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"}

    kinds = [e["kind"] for e in read_events(paths.events)]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("epoch") == 3 and kinds.count("memory") == 3 and "step" in kinds
    start = read_events(paths.events, "run_start")[0]
    for key in ("task", "model", "config_hash", "device", "params", "init_fingerprint", "pid"):
        assert start[key] is not None
    assert start["resumed"] is False and start["reset"] is None and start["init_from"] is None
    assert start["baselines"]["random_accuracy"] == pytest.approx(0.25)
    step = read_events(paths.events, "step")[0]
    assert {"epoch", "step", "loss", "lr", "samples_per_s"} <= set(step)
    assert step["step"] % 2 == 0  # log_every=2

    last = torch.load(paths.last_checkpoint, weights_only=True)
    for key in ("model", "optimizer", "scheduler", "ema", "scaler", "epoch", "global_step", "rng"):
        assert key in last
    assert last["epoch"] == 3 and last["classes"] == ["circle", "cross", "square", "triangle"]
    assert last["task"] == "classify" and last["init_fingerprint"] == start["init_fingerprint"]
    best = torch.load(paths.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.best["epoch"]
    assert result.metrics["baselines"]["majority_accuracy"] == pytest.approx(0.25)
    assert result.metrics["final"]["epoch"] == 3


def test_same_config_gives_the_same_curve(tmp_path, tiny_overrides):
    # augmentation (random flips) and dropout draw from the global RNG: both must be reseeded
    extra = ("data.hflip=0.5", "data.vflip=0.5", "model.drop_rate=0.2")
    a, _ = _train(tmp_path, tiny_overrides(*extra), name="a")
    b, _ = _train(tmp_path, tiny_overrides(*extra), name="b")
    assert a.history.read_text() == b.history.read_text()
    start_a = read_events(a.events, "run_start")[0]
    start_b = read_events(b.events, "run_start")[0]
    assert start_a["init_fingerprint"] == start_b["init_fingerprint"]


class Snapshots(Callback):
    """The model weights at the end of every epoch."""

    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, epoch, row):
        self.weights[epoch] = {k: v.clone() for k, v in trainer.c.model.state_dict().items()}


class SpoilHead(Callback):
    """Scales the classifier at the start of an epoch: that epoch ends far worse."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            with torch.no_grad():
                for p in trainer.c.model.get_classifier().parameters():
                    p.mul_(50)


def test_a_worse_epoch_never_overwrites_best(tmp_path, tiny_overrides):
    snapshots = Snapshots()
    paths, result = _train(tmp_path, tiny_overrides(), callbacks=[snapshots, SpoilHead(3)])
    rows = read_history(paths.history)
    assert rows[2]["val_loss"] > max(rows[0]["val_loss"], rows[1]["val_loss"])  # made worse
    best_epoch = min(rows, key=lambda r: r["val_loss"])["epoch"]
    assert best_epoch < 3 and result.best["epoch"] == best_epoch
    best = torch.load(paths.best_checkpoint, weights_only=True)
    assert best["epoch"] == best_epoch
    assert torch.load(paths.last_checkpoint, weights_only=True)["epoch"] == 3
    expected = snapshots.weights[best_epoch]
    assert all(torch.equal(best["model"][k], expected[k]) for k in expected)


def test_early_stopping_mode_follows_the_monitored_metric(tmp_path, tiny_overrides):
    # val_accuracy is a higher-is-better metric: best.pt must hold its maximum
    extra = ("train.early_stopping.monitor=val_accuracy", "train.epochs=3")
    paths, result = _train(tmp_path, tiny_overrides(*extra), callbacks=[SpoilHead(2)])
    accuracies = {r["epoch"]: r["val_accuracy"] for r in read_history(paths.history)}
    assert result.best["value"] == max(accuracies.values())
    assert accuracies[result.best["epoch"]] == max(accuracies.values())
    assert torch.load(paths.best_checkpoint, weights_only=True)["epoch"] == result.best["epoch"]


def test_best_pt_is_the_reported_best_after_a_crash_between_the_two_writes(
    tmp_path, tiny_overrides, monkeypatch
):
    from cellbench.engine import checkpoint

    real_write = checkpoint.write_checkpoint
    armed = {"epoch": None}

    class ArmAtEpoch3(Callback):
        def on_epoch_start(self, trainer, epoch):
            armed["epoch"] = epoch

    def write_dying_in_best(path, blob):
        if armed["epoch"] == 3 and path.name == "best.pt":
            armed["epoch"] = None
            raise RuntimeError("killed while writing best.pt")
        return real_write(path, blob)

    monkeypatch.setattr(checkpoint, "write_checkpoint", write_dying_in_best)
    with pytest.raises(RuntimeError, match="killed while writing"):
        _train(tmp_path, tiny_overrides("train.lr=0.003"), callbacks=[ArmAtEpoch3()])
    request = TrainRequest(run="r", resume=True, runs_dir=tmp_path / "runs")
    paths, result = train(request)
    assert result.status == "completed" and result.best["epoch"] == 3  # epoch 3 was the best
    assert torch.load(paths.best_checkpoint, weights_only=True)["epoch"] == result.best["epoch"]
    assert result.metrics["best"]["epoch"] == 3


class InjectNaN(Callback):
    """Poisons one weight at the start of an epoch, as a diverging step would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            with torch.no_grad():
                next(trainer.c.model.parameters()).view(-1)[0] = float("nan")


def test_non_finite_loss_stops_the_run_and_keeps_last_good_checkpoint(tmp_path, tiny_overrides):
    paths, result = _train(tmp_path, tiny_overrides("train.epochs=4"), callbacks=[InjectNaN(3)])
    assert result.status == "failed"
    assert "non-finite loss" in result.reason and "epoch 3" in result.reason
    last = torch.load(paths.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2  # epoch 3 never got a checkpoint
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert [r["epoch"] for r in read_history(paths.history)] == [1, 2]
    end = read_events(paths.events, "run_end")[-1]
    assert end["status"] == "failed"
    warnings = read_events(paths.events, "warning")
    assert any(w["check"] == "non_finite" and w["severity"] == "error" for w in warnings)


class ScaleHead(Callback):
    def on_train_start(self, trainer):
        with torch.no_grad():
            for p in trainer.c.model.get_classifier().parameters():
                p.mul_(100)


def test_initial_loss_check_fires_on_a_mis_scaled_head(tmp_path, tiny_overrides):
    paths, _ = _train(tmp_path, tiny_overrides("train.epochs=1"), callbacks=[ScaleHead()])
    checks = {w["check"]: w for w in read_events(paths.events, "warning")}
    assert "initial_loss" in checks
    assert "ln(C)" in checks["initial_loss"]["message"]


def test_initial_loss_check_is_quiet_on_a_sane_model(tmp_path, tiny_overrides):
    paths, _ = _train(tmp_path, tiny_overrides("train.epochs=1"))
    checks = {w["check"] for w in read_events(paths.events, "warning")}
    assert "initial_loss" not in checks and "input_range" not in checks


def test_input_range_check_flags_unnormalised_pixels(tmp_path, tiny_overrides):
    # mean 0, std 1/255 turns [0, 1] floats back into 0..255 values
    std = 1 / 255
    extra = ("data.mean=[0, 0, 0]", f"data.std=[{std}, {std}, {std}]", "train.epochs=1")
    paths, _ = _train(tmp_path, tiny_overrides(*extra))
    warning = next(w for w in read_events(paths.events, "warning") if w["check"] == "input_range")
    assert "outside" in warning["message"]


def test_early_stopping_stops_after_patience(tmp_path, tiny_overrides):
    # lr 0: nothing ever improves after epoch 1
    extra = (
        "train.lr=0",
        "train.epochs=6",
        "train.early_stopping.patience=2",
        "train.scheduler=none",
    )
    paths, result = _train(tmp_path, tiny_overrides(*extra))
    assert result.status == "completed" and "early stopping at epoch 3" in result.reason
    assert len(read_history(paths.history)) == 3


def test_frozen_backbone_epochs_train_only_the_head(tmp_path, tiny_overrides):
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            snapshots[epoch] = {k: v.clone() for k, v in trainer.c.model.state_dict().items()}

    extra = ("train.freeze_backbone_epochs=1", "train.epochs=2", "train.weight_decay=0")
    _train(tmp_path, tiny_overrides(*extra), callbacks=[Snapshot()])
    first, second = snapshots[1], snapshots[2]

    class Initial(Callback):
        def on_train_start(self, trainer):
            snapshots[0] = {k: v.clone() for k, v in trainer.c.model.state_dict().items()}

    _train(tmp_path, tiny_overrides(*extra), name="again", callbacks=[Initial()])
    init = snapshots[0]
    assert torch.equal(init["features.0.0.weight"], first["features.0.0.weight"])  # frozen
    assert not torch.equal(init["fc.weight"], first["fc.weight"])  # the head trained
    assert not torch.equal(first["features.0.0.weight"], second["features.0.0.weight"])  # thawed


def test_mixup_ema_label_smoothing_and_clipping_train(tmp_path, tiny_overrides):
    extra = (
        "train.mixup=0.2",
        "train.cutmix=1.0",
        "train.label_smoothing=0.1",
        "train.ema=true",
        "train.ema_decay=0.9",
        "train.eval_ema=true",
        "train.grad_clip=1.0",
        "train.warmup_epochs=1",
        "train.layer_decay=0.8",
        "train.epochs=2",
        "train.batch_size=10",
    )
    paths, result = _train(tmp_path, tiny_overrides(*extra))
    assert result.status == "completed"
    last = torch.load(paths.last_checkpoint, weights_only=True)
    assert last["ema"] is not None and last["ema"].keys() == last["model"].keys()
    # mixup drops the uneven last batch
    train_size = read_events(paths.events, "run_start")[0]["train_size"]
    assert train_size % 10 and last["global_step"] == 2 * (train_size // 10)
    assert all(math.isfinite(r["train_loss"]) for r in read_history(paths.history))


def test_sigint_stops_gracefully(tmp_path, tiny_overrides):
    class CtrlC(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 2:
                signal.raise_signal(signal.SIGINT)

    paths, result = _train(tmp_path, tiny_overrides("train.epochs=3"), callbacks=[CtrlC()])
    assert result.status == "interrupted"
    assert torch.load(paths.last_checkpoint, weights_only=True)["epoch"] == 1
    assert read_events(paths.events, "run_end")[-1]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_ctrl_c_in_the_first_epoch_leaves_a_resumable_initial_state(tmp_path, tiny_overrides):
    class CtrlCAtStart(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1:
                signal.raise_signal(signal.SIGINT)

    # augmentation and dropout draw random numbers: the epoch-0 state must carry the RNG too
    extra = ("data.hflip=0.5", "model.drop_rate=0.2", "train.epochs=2")
    whole, _ = _train(tmp_path, tiny_overrides(*extra), name="whole")
    cut, result = _train(tmp_path, tiny_overrides(*extra), name="cut", callbacks=[CtrlCAtStart()])
    assert result.status == "interrupted" and "epoch 0" in result.reason
    assert torch.load(cut.last_checkpoint, weights_only=True)["epoch"] == 0
    assert not cut.best_checkpoint.exists()

    paths, resumed = train(TrainRequest(run="cut", resume=True, runs_dir=tmp_path / "runs"))
    assert resumed.status == "completed"
    assert paths.history.read_text() == whole.history.read_text()
    a = torch.load(whole.last_checkpoint, weights_only=True)["model"]
    b = torch.load(paths.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_warmup_moves_the_ema_off_the_initial_weights(tmp_path, tiny_overrides):
    initial = {}

    class Initial(Callback):
        def on_train_start(self, trainer):
            initial.update({k: v.clone() for k, v in trainer.c.model.state_dict().items()})

    # the default decay 0.9998 over 6 steps: without warmup the EMA stays where the first update
    # copied it (the weights after step 1); with warmup it follows the model
    extra = ("train.ema=true", "train.epochs=2", "train.lr=0.01")
    paths, _ = _train(tmp_path, tiny_overrides(*extra), callbacks=[Initial()])
    last = torch.load(paths.last_checkpoint, weights_only=True)

    def distance(a, b):
        return sum(float((a[k].float() - b[k].float()).norm()) for k in initial)

    trained = distance(last["model"], initial)
    assert trained > 0 and distance(last["ema"], last["model"]) < 0.4 * trained


def test_train_loss_is_a_per_sample_mean(tmp_path, tiny_overrides):
    """With lr 0 the weights never move: train_loss must be the mean loss over the samples,
    whatever the batch sizes (48 images in batches of 20: 20, 20, 8)."""
    from cellbench.config import load_config
    from cellbench.data.classify import build_classification_data
    from cellbench.inference import build_model_from_checkpoint

    extra = ("train.lr=0", "train.scheduler=none", "train.batch_size=20", "train.epochs=1")
    overrides = tiny_overrides(*extra, "data.augment=false")
    paths, _ = _train(tmp_path, overrides)
    state = torch.load(paths.last_checkpoint, weights_only=True)
    model, _, _ = build_model_from_checkpoint(state, paths.last_checkpoint)
    data = build_classification_data(load_config(overrides=overrides))
    assert len(data.train) % 20  # uneven batches, or the test proves nothing
    images = torch.stack([data.train[i][0] for i in range(len(data.train))])
    labels = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(images), labels))
    assert read_history(paths.history)[0]["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_a_non_finite_gradient_norm_is_named_as_such(tmp_path, tiny_overrides):
    class InfiniteGradients(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 2:
                first = next(trainer.c.model.parameters())
                first.register_hook(lambda grad: grad * float("inf"))

    extra = ("train.grad_clip=1.0", "train.epochs=3")
    _, result = _train(tmp_path, tiny_overrides(*extra), callbacks=[InfiniteGradients()])
    assert result.status == "failed"
    assert "non-finite gradient norm" in result.reason and "epoch 2" in result.reason


def test_a_crash_is_reported_on_one_line(tmp_path, tiny_overrides):
    class Crash(Callback):
        def on_epoch_start(self, trainer, epoch):
            raise RuntimeError("\x1b[1mfirst line\x1b[0m\n\tdetails\n\tmore details")

    with pytest.raises(RuntimeError):
        _train(tmp_path, tiny_overrides("train.epochs=1"), callbacks=[Crash()])
    paths = RunStore(tmp_path / "runs").resolve("r")
    reason = read_events(paths.events, "run_end")[-1]["reason"]
    assert reason == "RuntimeError: first line"
    assert json.loads(paths.metrics.read_text())["reason"] == reason


def test_a_model_num_classes_that_disagrees_with_the_data_is_refused(tmp_path, tiny_overrides):
    from cellbench.engine.session import TrainRequest, train
    from cellbench.errors import UsageError

    request = TrainRequest(overrides=tiny_overrides("model.num_classes=200"), runs_dir=tmp_path)
    with pytest.raises(UsageError, match="model.num_classes=200 but the data has 4 classes"):
        train(request)
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_batchnorm_models_train(tmp_path, tiny_overrides):
    from cellbench.engine.session import TrainRequest, train

    request = TrainRequest(
        overrides=tiny_overrides(
            "model.name=inception_multibranch",
            "model.args={num_modules: 2, branch_channels: [8, 8, 8]}",
            "train.epochs=1",
        ),
        runs_dir=tmp_path,
    )
    _, result = train(request)
    assert result.status == "completed"


class BlockBestPt(Callback):
    """After epoch 1, a folder takes best.pt's place: the next best.pt write fails as a full
    disk or a read-only file would, with an OSError naming the file."""

    def on_epoch_end(self, trainer, epoch, row):
        if epoch == 1:
            best = trainer.paths.best_checkpoint
            best.unlink()
            best.mkdir()
            (best / "blocker").write_text("x")


def test_a_failed_best_pt_write_leaves_run_end_naming_what_the_files_hold(tmp_path, tiny_overrides):
    # train_loss falls from epoch 1 to 2 on this seed: epoch 2 is a new best, best.pt is written
    overrides = tiny_overrides("train.epochs=3", "train.early_stopping.monitor=train_loss")
    with pytest.raises(OSError) as caught:
        _train(tmp_path, overrides, callbacks=[BlockBestPt()])
    run = RunStore(tmp_path / "runs").resolve("r")
    assert caught.value.filename == str(run.best_checkpoint)
    (end,) = read_events(run.events, "run_end")
    assert end["status"] == "failed" and "best.pt" in end["reason"]
    last = torch.load(run.last_checkpoint, weights_only=True)
    # epoch 2 reached neither file: the run ends at epoch 1 with epoch 1 as its best
    assert last["epoch"] == 1 and end["best"]["epoch"] == 1
    metrics = json.loads(run.metrics.read_text())
    assert metrics["best"]["epoch"] == 1 and metrics["epochs"] == 1
    assert [r["epoch"] for r in read_history(run.history)] == [1]


class _TwoTermLoss(torch.nn.Module):
    def forward(self, outputs, targets):
        ce = torch.nn.functional.cross_entropy(outputs, targets)
        logit_l2 = outputs.pow(2).mean()
        return {"loss": ce + 0.01 * logit_l2, "ce": ce, "logit_l2": logit_l2}


def test_named_loss_terms_are_logged_per_epoch_for_train_and_val(tmp_path, tiny_config):
    from cellbench.engine.components import build_components
    from cellbench.engine.trainer import Trainer
    from cellbench.runs.events import EventWriter
    from cellbench.tasks.classify.task import ClassificationTask

    class TwoTerms(ClassificationTask):
        loss_names = ("ce", "logit_l2")

        def train_criterion(self, config, data):
            return _TwoTermLoss()

        eval_criterion = train_criterion

    config = tiny_config("train.epochs=2", "train.early_stopping.monitor=val_loss_ce")
    paths = RunStore(tmp_path / "runs").create("terms")
    with EventWriter(paths.events) as events:
        result = Trainer(build_components(config, TwoTerms()), paths, events).fit()
    rows = read_history(paths.history)
    for split in ("train", "val"):
        for term in ("ce", "logit_l2"):
            assert all(math.isfinite(r[f"{split}_loss_{term}"]) for r in rows)
    # the total is the weighted sum of its terms, per epoch
    for r in rows:
        assert r["val_loss"] == pytest.approx(r["val_loss_ce"] + 0.01 * r["val_loss_logit_l2"])
    assert result.best["metric"] == "val_loss_ce"
    epoch = read_events(paths.events, "epoch")[0]
    assert "train_loss_ce" in epoch["metrics"] and "val_loss_ce" in epoch["metrics"]


def test_gradient_accumulation_steps_the_optimizer_once_per_window(tmp_path, tiny_overrides):
    # 3 training batches per epoch: windows of 2 batches, the odd last batch closes its own
    # window (no gradient crosses an epoch), so 2 optimizer steps per epoch instead of 3
    paths, result = _train(
        tmp_path, tiny_overrides("train.grad_accum_steps=2", "train.epochs=2"), name="acc"
    )
    plain, _ = _train(tmp_path, tiny_overrides("train.epochs=2"), name="plain")
    batches = torch.load(plain.last_checkpoint, weights_only=True)["global_step"] // 2
    assert result.status == "completed"
    steps = torch.load(paths.last_checkpoint, weights_only=True)["global_step"]
    assert batches == 3 and steps == 2 * 2
    from cellbench.errors import UsageError

    with pytest.raises(UsageError, match="grad_accum_steps=0"):
        _train(tmp_path, tiny_overrides("train.grad_accum_steps=0"), name="zero")
