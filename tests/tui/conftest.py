"""Run folders for the TUI tests, written with the real writers (RunStore, EventWriter, History)."""

from __future__ import annotations

import os

import pytest

from cellbench.engine.history import History
from cellbench.runs.events import EventWriter
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import RunLock
from cellbench.runs.store import RunStore

CONFIG = "task: classify\nmodel:\n  name: simple_cnn\ntrain:\n  epochs: 3\n"


def epoch_event(writer: EventWriter, history: History, epoch: int, val_loss: float) -> None:
    row = {"epoch": epoch, "train_loss": val_loss + 0.1, "val_loss": val_loss}
    row.update(val_accuracy=1 - val_loss / 2, lr=1e-3)
    history.rows.append(row)
    history.write()
    writer.emit(
        "epoch",
        epoch=epoch,
        train_loss=row["train_loss"],
        val_loss=val_loss,
        metrics={"val_accuracy": row["val_accuracy"]},
        lr=1e-3,
        best={"metric": "val_loss", "value": val_loss, "epoch": epoch},
        time_s=0.1,
    )


def start_event(writer: EventWriter, device: str = "cpu (1 threads)", **extra) -> None:
    fields = dict(task="classify", model="simple_cnn", device=device, params=151108)
    fields.update(resumed=False, start_epoch=0, pid=os.getpid())
    writer.emit("run_start", **{**fields, **extra})


def write_finished_run(store: RunStore, name: str, epochs: int = 2) -> RunPaths:
    """A completed 2-epoch run: steps, epochs, CPU memory, one warning, run_end."""
    run = store.create(name)
    run.config.write_text(CONFIG)
    history = History(run.history)
    with EventWriter(run.events) as writer:
        start_event(writer)
        writer.emit("warning", check="initial_loss", severity="warning", message="loss 9 ≫ ln 4")
        for epoch in range(1, epochs + 1):
            for step in (2, 4):
                writer.emit("step", epoch=epoch, step=(epoch - 1) * 4 + step, loss=1.5 - step / 10)
            epoch_event(writer, history, epoch, 1.0 / epoch)
            writer.emit("memory", device="cpu", allocated=None, reserved=None, peak=None, rss=5e8)
        writer.emit(
            "run_end",
            status="completed",
            reason=f"{epochs} epochs",
            best={"metric": "val_loss", "value": 1.0 / epochs, "epoch": epochs},
        )
    return run


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def running_run(store):
    """A run being written now: this process holds its lock; yields (run, writer, history)."""
    run = store.create("live")
    run.config.write_text(CONFIG)
    with RunLock(run.lock), EventWriter(run.events) as writer:
        start_event(writer, device="cuda:0 (NVIDIA H100)")
        yield run, writer, History(run.history)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A tiny generated classification dataset (4 classes x 16 images of 32x32)."""
    from cellbench.data.classify.shapes import write_shapes_dataset

    root = tmp_path_factory.mktemp("data") / "shapes"
    write_shapes_dataset(root, n_per_class=16, image_size=32, seed=0)
    return root
