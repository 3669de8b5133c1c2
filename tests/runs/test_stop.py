"""``cellbench runs stop``: SIGINT to the run's checked writer; a real training ends ``interrupted``
with a ``last.pt`` that ``--resume`` continues."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.errors import RunConflict
from cellbench.runs.events import read_events
from cellbench.runs.lock import RunLock
from cellbench.runs.stop import NotRunning, request_stop, resume_commands, running_holder
from cellbench.runs.store import RunStore
from cellbench.runs.summary import summarize

runner = CliRunner()

# simple_cnn with 4/8 channels on 16-px images: an epoch takes well under a second on one core
TINY = [
    "--set", "data.image_size=16", "--set", "model.args.channels=[4,8]",
    "--set", "model.args.hidden=8", "--set", "train.batch_size=16",
    "--set", "train.warmup_epochs=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from cellbench.data.classify.shapes import write_shapes_dataset

    root = tmp_path_factory.mktemp("stop-data") / "shapes"
    write_shapes_dataset(root, n_per_class=10, image_size=16, seed=0)
    return root


def cellbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cellbench", *args], capture_output=True, text=True, **kwargs
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_stop_interrupts_a_real_training_that_resume_then_continues(tmp_path, shapes):
    runs = tmp_path / "runs"
    train = ["train", "--profile", "demo", *TINY, "--set", f"data.path={shapes}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellbench", *train, "--epochs", "500", "--run", "long",
         "--runs-dir", str(runs)],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "train.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    store = RunStore(runs)
    try:
        wait_for(
            lambda: (r := store.find("long")) is not None and read_events(r.events, kind="epoch"),
            120,
            "a first epoch",
        )
        result = cellbench(
            "runs", "stop", "long", "--wait", "--timeout", "60", "--runs-dir", str(runs)
        )
        assert result.returncode == 0, result.stderr
        assert "sent to pid" in result.stderr
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, 143)  # SIGTERM when SIGINT is ignored (a background job)
    run = store.find("long")
    summary = summarize(run)
    assert summary.status == "interrupted"
    assert run.last_checkpoint.is_file()
    done = summary.epochs
    # the exact commands, printed for copying
    assert f"cellbench train --run {run.root.name} --runs-dir {runs.resolve()} --resume" in (
        result.stdout
    )
    # --resume continues it from last.pt: its next epoch is done + 1; stopped again the same way
    resumed = subprocess.Popen(
        [sys.executable, "-m", "cellbench", "train", "--run", "long", "--resume",
         "--runs-dir", str(runs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: any(e["epoch"] > done for e in read_events(run.events, kind="epoch")),
            120,
            "an epoch after the resume",
        )
        assert cellbench("runs", "stop", "long", "--wait", "--runs-dir", str(runs)).returncode == 0
        resumed.wait(timeout=30)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    starts = read_events(run.events, kind="run_start")
    assert starts[-1]["resumed"] and starts[-1]["start_epoch"] == done
    assert summarize(run).status == "interrupted" and summarize(run).epochs > done


def test_stop_of_a_run_that_is_not_running_says_so_and_prints_the_commands(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create("done")
    result = runner.invoke(app, ["runs", "stop", "done", "--runs-dir", str(store.root)])
    assert result.exit_code == 0
    assert "not running (no lock" in result.stderr
    assert f"retrain  cellbench train --run {run.root.name} --runs-dir" in result.stdout
    with pytest.raises(NotRunning):
        request_stop(run)


def test_a_lock_of_another_host_or_a_reused_pid_is_never_signalled(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create("remote")
    run.lock.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "pid_started": 1}))
    with pytest.raises(RunConflict, match="on host elsewhere, not this host"):
        request_stop(run)
    result = runner.invoke(app, ["runs", "stop", "remote", "--runs-dir", str(store.root)])
    assert result.exit_code == 4
    # our own pid, but the lock says it started long ago: the pid was reused, not this writer
    run.lock.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "pid_started": 1.0})
    )
    with pytest.raises(NotRunning, match="belongs to another process"):
        running_holder(run)


def test_a_live_pid_the_lock_cannot_prove_to_be_the_writer_is_never_signalled(tmp_path):
    """A lock that records no start time (cellbench's locks always do) names a live unrelated
    process: it is refused (exit 4) and the process lives on."""
    store = RunStore(tmp_path / "runs")
    run = store.create("c2")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.lock.write_text(json.dumps({"pid": bystander.pid, "host": socket.gethostname()}))
        with pytest.raises(RunConflict, match="cannot prove that pid"):
            request_stop(run)
        result = runner.invoke(app, ["runs", "stop", "c2", "--runs-dir", str(store.root)])
        assert result.exit_code == 4
        for garbage in ('{"pid": "abc"}', "[]", '{"pid": 99999999999999999999}'):
            run.lock.write_text(garbage)
            result = runner.invoke(app, ["runs", "stop", "c2", "--runs-dir", str(store.root)])
            assert result.exit_code == 0 and "not running (no lock" in result.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_holder_is_the_lock_owner_on_this_host(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create("mine")
    with RunLock(run.lock):
        holder = running_holder(run)
    assert holder.pid == os.getpid() and holder.host == socket.gethostname()


def test_resume_commands_name_the_runs_folder_unless_it_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = RunStore(tmp_path / "runs")
    run = store.create("exp")
    run.checkpoints.mkdir()
    run.last_checkpoint.write_bytes(b"x")
    assert resume_commands(run) == {
        "resume": "cellbench train --run 0001-exp --resume",
        "retrain": "cellbench train --run 0001-exp --fresh",
    }
    elsewhere = RunStore(tmp_path / "my runs").create("exp")
    assert resume_commands(elsewhere)["retrain"] == (
        f"cellbench train --run 0001-exp --runs-dir '{tmp_path / 'my runs'}' --fresh"
    )
