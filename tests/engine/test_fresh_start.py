"""The guarantees of seeds/000, end to end with real tiny trainings: a fresh start ("run 2")
keeps nothing from run 1 but its architecture, hyper-parameters and seed.

Each test trains a simple_cnn on the generated shapes dataset (32x32, 48 training images,
3 batches per epoch) for 1-2 epochs, through the same ``train`` the CLI calls (with a callback that
looks at the loop's very start) or through the CLI itself.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.engine.checkpoint import weights_fingerprint
from cellbench.engine.session import TrainRequest, train
from cellbench.engine.trainer import Callback
from cellbench.runs import RunPaths, RunStore, read_events
from cellbench.runs.clean import TRASH_PREFIX

TINY = (
    "data.image_size=32",
    "train.batch_size=16",
    "train.log_every=2",
    "model.name=simple_cnn",
    "model.args={channels: [8, 16], hidden: 32}",
)
BATCHES_PER_EPOCH = 3  # 48 training images of the 64 generated, batches of 16

runner = CliRunner()


class StartProbe(Callback):
    """What the loop holds at its very start (after run_start, before the first step), and the
    weights it ends with."""

    def on_train_start(self, trainer) -> None:
        self.fingerprint = weights_fingerprint(trainer.c.model)
        self.params = {n: p.detach().clone() for n, p in trainer.c.model.named_parameters()}
        self.optimizer_state = len(trainer.c.optimizer.state)
        self.lrs = [group["lr"] for group in trainer.c.optimizer.param_groups]
        self.global_step = trainer.global_step
        self.start_epoch = trainer.start_epoch
        root = trainer.paths.root
        self.files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def on_epoch_end(self, trainer, epoch, row) -> None:
        self.trained_fingerprint = weights_fingerprint(trainer.c.model)


def _train(runs_root: Path, run: str, *overrides: str, **kwargs):
    probe = StartProbe()
    request = TrainRequest(runs_dir=runs_root, run=run, overrides=list(overrides), **kwargs)
    paths, result = train(request, callbacks=[probe])
    assert result.status == "completed", result.reason
    return paths, probe


def _cli(*args: str):
    return runner.invoke(app, list(args))


def _optimizer_steps(checkpoint: dict) -> set[int]:
    return {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()}


@pytest.fixture(scope="module")
def retrain(tmp_path_factory) -> SimpleNamespace:
    """Run 1 trained for 2 epochs with eval and LR-finder outputs, then ``train --run X --fresh``
    for 1 epoch. Everything the tests compare is captured on the way."""
    from cellbench.data.classify.shapes import write_shapes_dataset

    base = tmp_path_factory.mktemp("fresh")
    write_shapes_dataset(base / "shapes", n_per_class=16, image_size=32, seed=0)
    runs_root = base / "runs"
    run1, probe1 = _train(
        runs_root, "retrain", f"data.path={base / 'shapes'}", *TINY, "train.epochs=2"
    )
    (run1.eval_dir / "test").mkdir(parents=True)
    (run1.eval_dir / "test" / "metrics.json").write_text("{}")
    (run1.root / "lr_find.json").write_text('{"suggestion": 0.001}')
    old_files = {
        str(p.relative_to(run1.root)): p.stat().st_size for p in run1.root.rglob("*") if p.is_file()
    }
    old_checkpoint = torch.load(run1.last_checkpoint, weights_only=True)
    old_epochs = read_events(run1.events, "epoch")

    # file times come from the kernel's coarse clock: compare them with each other, not with
    # time.time(), and leave a gap longer than its tick
    run1_newest = max(p.stat().st_mtime for p in run1.root.rglob("*") if p.is_file())
    time.sleep(0.05)
    run2, probe2 = _train(runs_root, "retrain", "train.epochs=1", fresh=True)
    return SimpleNamespace(
        run1=run1,
        probe1=probe1,
        old_files=old_files,
        old_checkpoint=old_checkpoint,
        old_epochs=old_epochs,
        run1_newest=run1_newest,
        run2=run2,
        probe2=probe2,
        start=read_events(run2.events, "run_start")[-1],
        first_start=read_events(run2.events, "run_start")[0],
        new_checkpoint=torch.load(run2.last_checkpoint, weights_only=True),
    )


def test_fresh_start_is_the_same_run_folder(retrain) -> None:
    assert retrain.run2.root == retrain.run1.root


def test_new_weights_not_run1s_trained_weights(retrain) -> None:
    trained = retrain.old_checkpoint["model"]
    # the fingerprint probe saw at run 1's end is the weights of its last.pt
    assert retrain.probe1.trained_fingerprint != retrain.probe1.fingerprint
    assert retrain.probe2.fingerprint != retrain.probe1.trained_fingerprint
    # parameter by parameter: not one tensor of run 1's trained weights is where run 2 starts
    for name, start in retrain.probe2.params.items():
        assert not torch.equal(start, trained[name]), f"{name} carried over from run 1"
    # the recorded fingerprint is the one the loop really started from
    assert retrain.start["init_fingerprint"] == retrain.probe2.fingerprint
    assert retrain.new_checkpoint["init_fingerprint"] == retrain.probe2.fingerprint


def test_no_optimizer_or_scheduler_state_carried(retrain) -> None:
    p1, p2 = retrain.probe1, retrain.probe2
    # at the start: an optimizer that has never stepped, the schedule at its first value
    assert p2.optimizer_state == 0
    assert p2.global_step == 0 and p2.start_epoch == 0
    assert p2.lrs == p1.lrs
    # run 1 took 2 epochs of steps; the fresh run's counters start from 1, not from run 1's
    assert _optimizer_steps(retrain.old_checkpoint) == {2 * BATCHES_PER_EPOCH}
    assert _optimizer_steps(retrain.new_checkpoint) == {BATCHES_PER_EPOCH}
    assert retrain.new_checkpoint["epoch"] == 1
    assert retrain.new_checkpoint["global_step"] == BATCHES_PER_EPOCH
    # a new scheduler over the new run's epochs, not run 1's (2 epochs) continued
    assert retrain.new_checkpoint["scheduler"]["t_initial"] == 1
    new_epoch = read_events(retrain.run2.events, "epoch")[-1]
    assert new_epoch["epoch"] == 1
    assert math.isclose(new_epoch["lr"], retrain.old_epochs[0]["lr"])


def test_old_files_gone_before_training_starts(retrain) -> None:
    old = retrain.old_files
    assert {"checkpoints/last.pt", "checkpoints/best.pt", "history.csv", "metrics.json"} <= set(old)
    # what the loop saw at its start: the resolved config, the event log, the record of what it
    # trains on (runs.inputs, written anew like config.yaml) and its own lock
    assert retrain.probe2.files == ["config.yaml", "events.jsonl", "inputs.json", "lock"]
    # and once it finished, every file but the append-only log was written by the fresh run
    for path in retrain.run2.root.rglob("*"):
        if path.is_file() and path.name != "events.jsonl":
            assert path.stat().st_mtime > retrain.run1_newest, f"{path} survived from run 1"
    assert not (retrain.run2.root / "lr_find.json").exists()
    assert not retrain.run2.eval_dir.exists()
    assert not [p for p in retrain.run2.root.iterdir() if p.name.startswith(TRASH_PREFIX)]


def test_run_start_records_the_reset(retrain) -> None:
    start, old = retrain.start, retrain.old_files
    assert start["resumed"] is False and start["start_epoch"] == 0 and start["init_from"] is None
    reset = start["reset"]
    assert set(reset["removed"]) == {
        "checkpoints",
        "history.csv",
        "metrics.json",
        "eval",
        "lr_find.json",
    }
    removed_bytes = sum(
        size
        for name, size in old.items()
        if name not in ("config.yaml", "events.jsonl", "inputs.json")  # rewritten, not removed
    )
    assert reset["bytes"] == removed_bytes
    assert reset["cuda_emptied"] is torch.cuda.is_available()
    assert isinstance(reset["gc_collected"], int) and reset["gc_collected"] >= 0
    assert len(start["init_fingerprint"]) == 64
    # run 1's own start recorded no reset: nothing was there to remove
    assert retrain.first_start["reset"] is None


def test_same_seed_same_start_on_every_fresh_start(retrain) -> None:
    # run 1 and its fresh restart started from the same weights: same seed, same start
    assert retrain.start["init_fingerprint"] == retrain.first_start["init_fingerprint"]
    assert retrain.probe2.fingerprint == retrain.probe1.fingerprint


def test_repeated_fresh_starts_agree_and_a_new_seed_differs(tmp_path, tiny_overrides) -> None:
    runs_root = tmp_path / "runs"
    run, first = _train(runs_root, "seeded", *tiny_overrides("train.epochs=1"))
    _, again = _train(runs_root, "seeded", fresh=True)
    _, third = _train(runs_root, "seeded", fresh=True)
    _, other = _train(runs_root, "seeded", "train.seed=7", fresh=True)
    starts = [e["init_fingerprint"] for e in read_events(run.events, "run_start")]
    assert starts[:3] == [first.fingerprint] * 3
    assert again.fingerprint == third.fingerprint == first.fingerprint
    assert starts[3] == other.fingerprint != first.fingerprint


def test_fresh_start_loads_the_data_anew(tmp_path, tiny_overrides) -> None:
    from cellbench.data.classify.shapes import write_shapes_dataset

    data = tmp_path / "fixed"
    write_shapes_dataset(data, n_per_class=16, image_size=32, seed=0)
    runs_root = tmp_path / "runs"
    run, _ = _train(runs_root, "data", *tiny_overrides("train.epochs=1", f"data.path={data}"))
    # the data are fixed in place (the seeds/001 situation): same folder, new content
    shutil.rmtree(data)
    write_shapes_dataset(data, n_per_class=20, image_size=32, seed=1)
    _train(runs_root, "data", fresh=True)
    old, new = read_events(run.events, "run_start")
    assert (old["train_size"], new["train_size"]) == (48, 56)  # 70% of 64, then of 80 images


def _trained_run(runs_root: Path, name: str, overrides: list[str]) -> RunPaths:
    result = _cli("train", "--runs-dir", str(runs_root), "--run", name, *_sets(overrides))
    assert result.exit_code == 0, result.output
    return RunStore(runs_root).resolve(name)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for value in overrides for arg in ("--set", value)]


def test_clean_then_train_fresh_through_the_cli(tmp_path, tiny_overrides) -> None:
    runs_root = tmp_path / "runs"
    run = _trained_run(runs_root, "cli", tiny_overrides("train.epochs=1"))
    first = read_events(run.events, "run_start")[0]["init_fingerprint"]

    cleaned = _cli("clean", "--run", "cli", "--yes", "--json", "--runs-dir", str(runs_root))
    assert cleaned.exit_code == 0, cleaned.output
    assert [Path(r["path"]).name for r in json.loads(cleaned.stdout)["removed"]] == ["checkpoints"]
    assert not run.checkpoints.exists()

    # a run with history but no checkpoint still needs --fresh: nothing is silently reused
    refused = _cli("train", "--runs-dir", str(runs_root), "--run", "cli")
    assert refused.exit_code == 4 and "--fresh" in refused.output

    fresh = _cli("train", "--runs-dir", str(runs_root), "--run", "cli", "--fresh")
    assert fresh.exit_code == 0, fresh.output
    start = read_events(run.events, "run_start")[-1]
    assert "checkpoints" not in start["reset"]["removed"]  # clean had already removed them
    assert {"history.csv", "metrics.json"} <= set(start["reset"]["removed"])
    assert start["init_fingerprint"] == first
    assert torch.load(run.last_checkpoint, weights_only=True)["epoch"] == 1


def test_clean_all_then_train_starts_from_nothing(tmp_path, tiny_overrides) -> None:
    runs_root = tmp_path / "runs"
    run = _trained_run(runs_root, "wiped", tiny_overrides("train.epochs=1"))
    first = read_events(run.events, "run_start")[0]["init_fingerprint"]
    cleaned = _cli("clean", "--run", "wiped", "--all", "--yes", "--runs-dir", str(runs_root))
    assert cleaned.exit_code == 0, cleaned.output
    assert [p.name for p in run.root.iterdir()] == ["config.yaml"]

    # nothing trained is left: the run trains again on its saved config, no --fresh needed
    result = _cli("train", "--runs-dir", str(runs_root), "--run", "wiped")
    assert result.exit_code == 0, result.output
    (start,) = read_events(run.events, "run_start")
    assert start["reset"] is None and start["init_fingerprint"] == first

    # and a brand-new run of the same config starts from the same weights, in its own folder
    other = _trained_run(runs_root, "wiped-v2", tiny_overrides("train.epochs=1"))
    assert read_events(other.events, "run_start")[0]["init_fingerprint"] == first


def test_fresh_on_a_run_being_trained_is_refused_and_deletes_nothing(
    tmp_path, tiny_overrides
) -> None:
    runs_root = tmp_path / "runs"
    run = _trained_run(runs_root, "busy", tiny_overrides("train.epochs=1"))
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.lock.write_text(json.dumps({"pid": writer.pid, "host": socket.gethostname()}))
        result = _cli("train", "--runs-dir", str(runs_root), "--run", "busy", "--fresh")
    finally:
        writer.kill()
        writer.wait()
    assert result.exit_code == 4
    assert run.last_checkpoint.exists() and run.history.exists()
    assert len(read_events(run.events, "run_start")) == 1
