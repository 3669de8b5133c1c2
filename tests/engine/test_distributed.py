"""Several processes, one training (gloo on CPU, through ``cellbench train --nproc 2``).

The reference of a W-process run is the one-process run with accumulation W: the training order
is one ``DistributedSampler`` permutation at any world size, so each optimizer update sees the
same samples, and DDP's averaged gradient equals the accumulated one up to float32 summation
order. Tolerance: relative 1e-5 on losses (observed ~1e-7: the all-reduce adds the two ranks'
gradients in another order than the accumulation, and validation batches group samples
differently), exact on count metrics (accuracy, macro-F1). Augmentation is off in these runs:
it draws from each rank's own RNG, so with it the curves agree only statistically. The nuclei
decoder has BatchNorm, which normalises each micro-batch with its own statistics: the two runs
group an update's tiles into different micro-batches (strided over ranks vs consecutive), so
its tolerance is looser (see ``NUCLEI_RTOL``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cellbench.engine.history import read_history
from cellbench.engine.session import TrainRequest, train
from cellbench.runs.events import read_events
from cellbench.runs.store import RunStore
from tests.helpers_nuclei import nuclei_features, nuclei_overrides  # noqa: F401

LOSS_RTOL = 1e-5
# over a dozen epochs the ~1e-7 differences of the first grow as any float perturbation of SGD
# does (observed 3e-5 at epoch 10)
LONG_RTOL = 1e-4
# BatchNorm statistics over differently grouped micro-batches of 4 tiles (module docstring)
NUCLEI_RTOL = 0.05
COUNT_METRICS = ("val_accuracy", "val_macro_f1")

TWO = [
    "model.name=simple_cnn",
    "model.args={channels: [8, 16], hidden: 32}",
    "data.image_size=32",
    "data.augment=false",
    "train.batch_size=8",
    "train.log_every=2",
]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cellbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _sets(overrides: list[str]) -> list[str]:
    return [part for o in overrides for part in ("--set", o)]


def _one_process(root: Path, overrides: list[str], name: str):
    torch.set_num_threads(1)  # as each torchrun worker: the same kernels
    try:
        return train(TrainRequest(overrides=overrides, run=name, runs_dir=root))
    finally:
        torch.set_num_threads(os.cpu_count() or 1)


def _validate_checkpoint(paths):
    """The checkpoint's validation metrics computed by one process (the trainer's own pass)."""
    from cellbench.config import load_config
    from cellbench.engine.components import build_components
    from cellbench.engine.session import SilentEvents
    from cellbench.engine.trainer import Trainer
    from cellbench.tasks import get_task

    config = load_config(config_file=paths.config)
    c = build_components(config, get_task(config.task))
    state = torch.load(paths.last_checkpoint, weights_only=True)
    c.model.load_state_dict(state["model"])
    return Trainer(c, paths, SilentEvents())._validate(int(state["epoch"]))


def _assert_same_curve(rows, reference, rtol, exact=()):
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in reference]
    for row, ref in zip(rows, reference, strict=True):
        for key, value in ref.items():
            if key in exact:
                assert row[key] == value, (key, row, ref)
            elif isinstance(value, float) and value == value:
                assert row[key] == pytest.approx(value, rel=rtol), (key, row, ref)


# ---------------------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def two_process_run(shapes_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "runs"
    overrides = [f"data.path={shapes_dir}", *TWO, "train.epochs=3"]
    done = _cli("train", "--nproc", "2", "--run", "two", "--runs-dir", str(root), *_sets(overrides))
    assert done.returncode == 0, done.stderr[-3000:]
    return RunStore(root).resolve("two"), overrides, done


@pytest.mark.slow  # torchrun starts 3 Python processes: ~30 s on 2 cores
def test_two_processes_follow_one_process_with_accumulation(two_process_run, tmp_path):
    paths, overrides, _ = two_process_run
    one, result = _one_process(tmp_path, [*overrides, "train.grad_accum_steps=2"], "one")
    assert result.status == "completed"
    _assert_same_curve(
        read_history(paths.history), read_history(one.history), LOSS_RTOL, COUNT_METRICS
    )


@pytest.mark.slow  # torchrun starts 3 Python processes: ~30 s on 2 cores
def test_one_writer_and_the_effective_batch_recorded(two_process_run):
    paths, _, done = two_process_run
    kinds = [e["kind"] for e in read_events(paths.events)]
    # one writer: a second one would have doubled every line
    assert kinds.count("run_start") == 1 and kinds.count("run_end") == 1
    assert kinds.count("epoch") == 3
    start = read_events(paths.events, "run_start")[0]
    assert start["world_size"] == 2 and start["batch_size"] == 8
    assert start["grad_accum_steps"] == 1 and start["effective_batch"] == 16
    assert "effective batch 16 = batch 8 x accumulation 1 x 2 processes" in done.stderr
    assert done.stderr.count("completed ") == 1  # rank 0 speaks for the run
    last = torch.load(paths.last_checkpoint, weights_only=True)
    assert last["world_size"] == 2 and last["epoch"] == 3
    assert not any(k.startswith("module.") for k in last["model"])  # the unwrapped model
    assert not paths.lock.exists()
    assert not list(paths.root.rglob("*.tmp"))


@pytest.mark.slow  # torchrun starts 3 Python processes: ~30 s on 2 cores
def test_validation_under_two_ranks_equals_one_process_on_the_checkpoint(two_process_run):
    paths, _, _ = two_process_run
    alone = _validate_checkpoint(paths)
    row = read_history(paths.history)[-1]
    for name in ("accuracy", "macro_f1"):
        assert row[f"val_{name}"] == alone[name]  # confusion counts summed: exact
    assert row["val_loss"] == pytest.approx(alone["loss"], rel=1e-6)


@pytest.mark.slow  # torchrun starts 3 Python processes: ~30 s on 2 cores
def test_a_taken_run_name_is_refused_by_every_rank_with_one_line(two_process_run):
    paths, overrides, _ = two_process_run
    runs = str(paths.root.parent)
    done = _cli("train", "--nproc", "2", "--run", "two", "--runs-dir", runs, *_sets(overrides))
    assert done.returncode == 4
    assert done.stderr.count("run exists") == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- kill and resume


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    return None


def _start_and_wait(runs: Path, overrides: list[str], epochs_done: int):
    """A 2-process training of run "k", returned once ``epochs_done`` epochs are in history."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "cellbench", "train", "--nproc", "2", "--run", "k"]
        + ["--runs-dir", str(runs), *_sets(overrides)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and launcher.poll() is None:
        found = RunStore(runs).find("k") if runs.exists() else None
        if found and found.history.exists() and len(read_history(found.history)) >= epochs_done:
            break
        time.sleep(0.05)
    assert launcher.poll() is None and _rank_pid(launcher, 1), "the run ended too early"
    return launcher, RunStore(runs).resolve("k")


@pytest.mark.slow
def test_a_rank_killed_leaves_one_consistent_run_that_resumes(shapes_dir, tmp_path):
    runs = tmp_path / "runs"
    overrides = [f"data.path={shapes_dir}", *TWO, "train.epochs=12"]
    launcher, _ = _start_and_wait(runs, overrides, epochs_done=2)
    os.kill(_rank_pid(launcher, 1), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode != 0
    assert "Traceback" not in stderr, stderr[-4000:]

    paths = RunStore(runs).resolve("k")
    rows = read_history(paths.history)
    last = torch.load(paths.last_checkpoint, weights_only=True)
    assert 2 <= len(rows) < 12 and last["epoch"] == rows[-1]["epoch"]  # one consistent state
    end = read_events(paths.events, "run_end")
    assert len(end) == 1 and end[0]["status"] == "failed"
    assert f"keeps epoch {last['epoch']}" in end[0]["reason"]
    assert not list(paths.root.rglob("*.tmp"))

    # --resume with one process: the accumulation becomes 2, the effective batch stays 16,
    # and the run continues on the curve of an uninterrupted one
    torch.set_num_threads(1)
    try:
        resumed, result = train(TrainRequest(run="k", resume=True, runs_dir=runs))
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    assert result.status == "completed"
    start = read_events(resumed.events, "run_start")[-1]
    assert start["world_size"] == 1 and start["grad_accum_steps"] == 2
    assert start["effective_batch"] == 16 and start["resumed"] is True
    whole, _ = _one_process(tmp_path / "ref", [*overrides, "train.grad_accum_steps=2"], "w")
    _assert_same_curve(
        read_history(resumed.history), read_history(whole.history), LONG_RTOL, COUNT_METRICS
    )


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(shapes_dir, tmp_path):
    runs = tmp_path / "runs"
    overrides = [f"data.path={shapes_dir}", *TWO, "train.epochs=12"]
    launcher, paths = _start_and_wait(runs, overrides, epochs_done=1)
    os.kill(_rank_pid(launcher, 1), signal.SIGTERM)  # a scheduler signalling one process
    _, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode == 143, stderr[-3000:]  # rank 0 names the same signal
    assert "Traceback" not in stderr, stderr[-4000:]
    end = read_events(paths.events, "run_end")
    assert len(end) == 1 and end[0]["status"] == "interrupted" and end[0]["signal"] == "SIGTERM"
    rows = read_history(paths.history)
    assert torch.load(paths.last_checkpoint, weights_only=True)["epoch"] == rows[-1]["epoch"]
    assert not paths.lock.exists()


# ---------------------------------------------------------------------------- nuclei


@pytest.mark.slow
def test_nuclei_two_processes_and_bpq_from_gathered_tile_counts(nuclei_features, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    overrides = nuclei_overrides(
        nuclei_features, "data.family=null", "data.augment=false", "eval.pq_every=1"
    )
    done = _cli("train", "--nproc", "2", "--run", "n", "--runs-dir", str(runs), *_sets(overrides))
    assert done.returncode == 0, done.stderr[-3000:]
    paths = RunStore(runs).resolve("n")
    rows = read_history(paths.history)
    assert all(r["val_bpq"] == r["val_bpq"] for r in rows)  # scored every epoch

    # validation metrics of 2 ranks == 1 process on the same checkpoint: pixel counts summed,
    # bPQ from the gathered per-tile counts in dataset order
    alone = _validate_checkpoint(paths)
    for name in ("np_dice", "nt_accuracy", "bpq"):
        assert rows[-1][f"val_{name}"] == alone[name], name
    assert rows[-1]["val_hv_mse"] == pytest.approx(alone["hv_mse"], rel=1e-6)

    one, _ = _one_process(tmp_path / "one", [*overrides, "train.grad_accum_steps=2"], "one")
    reference = read_history(one.history)
    for row, ref in zip(rows, reference, strict=True):
        assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=NUCLEI_RTOL)
        assert row["val_loss"] == pytest.approx(ref["val_loss"], rel=NUCLEI_RTOL)


# ---------------------------------------------------------------------------- the pieces


def test_validation_shards_cover_the_split_once_in_order():
    from cellbench.engine.distributed import ShardSampler

    for length, world in ((10, 2), (11, 3), (3, 4), (0, 2)):
        shards = [list(ShardSampler(length, r, world)) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(length))
        assert all(len(ShardSampler(length, r, world)) == len(s) for r, s in enumerate(shards))


def test_ranks_batches_make_up_the_accumulation_window_of_one_process():
    # the property the curve tests rest on: update k of W ranks x batch B sees the samples of
    # update k of 1 process x batch B x accumulation W
    from cellbench.engine.distributed import EpochPermutationSampler

    batch, world = 8, 2
    one = EpochPermutationSampler(48, seed=42)
    ranks = [EpochPermutationSampler(48, seed=42, rank=r, world_size=world) for r in range(world)]
    for sampler in (one, *ranks):
        sampler.set_epoch(3)
    order = list(one)
    per_rank = [list(s) for s in ranks]
    for k in range(len(order) // (batch * world)):
        window = set(order[k * batch * world : (k + 1) * batch * world])
        union = {i for r in per_rank for i in r[k * batch : (k + 1) * batch]}
        assert union == window


def test_one_process_trains_on_the_order_it_had_before_distributed_training():
    # the contract of the quickstart's numbers: a single-process run sees exactly the order a
    # DataLoader(shuffle=True) drew from the epoch's generator before the sampler existed
    from torch.utils.data import DataLoader

    from cellbench.engine.distributed import EpochPermutationSampler
    from cellbench.engine.seeding import epoch_seed

    for length, epoch in ((37, 0), (37, 4), (64, 1)):
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(7, epoch))
        loader = DataLoader(list(range(length)), batch_size=5, shuffle=True, generator=generator)
        before = [int(i) for b in loader for i in b]
        sampler = EpochPermutationSampler(length, seed=7)
        sampler.set_epoch(epoch)
        assert list(sampler) == before


def test_ranks_cover_the_epoch_padded_to_equal_steps():
    from cellbench.engine.distributed import EpochPermutationSampler

    for length, world in ((37, 2), (10, 3), (3, 4)):
        ranks = [
            EpochPermutationSampler(length, seed=1, rank=r, world_size=world) for r in range(world)
        ]
        shards = [list(s) for s in ranks]
        assert {len(s) for s in shards} == {len(ranks[0])}
        assert {i for s in shards for i in s} == set(range(length))


def test_resume_with_another_world_size_keeps_the_effective_batch():
    from cellbench.config import Config
    from cellbench.engine.session import fit_world_size
    from cellbench.errors import UsageError

    def state(world, accum):
        return {"world_size": world, "config": {"train": {"grad_accum_steps": accum}}}

    config = Config()
    config.train.batch_size = 8
    assert fit_world_size(config, state(2, 1), 2) is None
    note = fit_world_size(config, state(2, 1), 1)
    assert config.train.grad_accum_steps == 2 and "effective batch 16" in note
    fit_world_size(config, state(1, 4), 2)
    assert config.train.grad_accum_steps == 2
    with pytest.raises(UsageError, match="--nproc N where N divides 2"):
        fit_world_size(config, state(2, 1), 3)


def test_on_main_and_collectives_are_plain_calls_in_one_process():
    from cellbench.engine import distributed

    assert distributed.current().world_size == 1
    assert distributed.on_main(lambda: 7) == 7
    assert distributed.gather_objects("x") == ["x"]
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        distributed.on_main(lambda: (_ for _ in ()).throw(ValueError("no")))
