"""The views added for #17, driven by Textual's pilot against run folders written event by event:
metric curves, stop (with a real lock holder process), compare, GPUs, the 80x24 layout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from cellbench.runs.events import read_events
from cellbench.tui.app import CellbenchTUI
from cellbench.tui.compare import CompareScreen, config_differences
from cellbench.tui.gpus import GpuScreen, read_gpus
from cellbench.tui.watch import RunWatcher
from cellbench.tui.widgets.curves import MetricCurves
from cellbench.tui.widgets.run_info import RunHeader
from cellbench.tui.widgets.runs_table import RunsTable

from .conftest import CONFIG, epoch_event, write_finished_run
from .screens import screen_text, write_gallery
from .test_app import drive, settle, shown


def test_curve_names_come_from_what_the_run_logged(store, running_run):
    run, writer, history = running_run
    watcher = RunWatcher(run)
    watcher.poll()
    assert watcher.curve_names() == ["loss"]  # nothing but losses before an epoch
    writer.emit(
        "epoch", epoch=1, train_loss=1.0, val_loss=0.9, lr=0.1, time_s=1.0,
        metrics={"train_loss_np": 0.5, "val_loss_np": 0.4, "val_dice": 0.7, "val_bpq": 0.3},
        best={"metric": "val_dice", "value": 0.7, "epoch": 1},
    )  # fmt: skip
    watcher.poll()
    # a nuclei-like run: its loss term, its metrics, the lr; no list of task names involved
    assert watcher.curve_names() == ["loss", "loss_np", "val_dice", "val_bpq", "lr"]
    assert [label for label, *_ in watcher.curve("loss_np")] == ["train_loss_np", "val_loss_np"]
    assert watcher.curve("lr") == [("lr", [1.0], [0.1])]
    assert watcher.monitored == "val_dice"


def test_curves_grow_switch_metric_and_log_scale(store, running_run):
    run, writer, history = running_run

    async def scenario(pilot):
        app = pilot.app
        curves = app.query_one(MetricCurves)
        epoch_event(writer, history, 1, 0.9)
        await pilot.pause(0.3)
        await settle(pilot)
        assert curves.choice == "loss"
        assert app.current.curve("loss")[1][2] == [0.9]
        epoch_event(writer, history, 2, 0.5)
        await pilot.pause(0.3)
        await settle(pilot)
        assert app.current.curve("loss")[1][2] == [0.9, 0.5]  # the val_loss curve grew
        await pilot.press("right_square_bracket")
        assert curves.choice == "val_accuracy"
        await pilot.press("l")
        assert curves.log_scale
        # the picker lists every curve; enter picks
        await pilot.press("m")
        await pilot.pause()
        assert type(app.screen).__name__ == "PickScreen"
        await pilot.press("down", "enter")
        await pilot.pause()
        assert curves.choice == "lr"
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert curves.choice == "loss"
        # a warning appears live
        writer.emit("warning", check="no_decrease", severity="warning", message="flat")
        await pilot.pause(0.3)
        await settle(pilot)
        assert app.query_one("#warnings").border_title == "warnings 1"

    drive(CellbenchTUI(store.root, interval=0.05), scenario)


HOLDER = textwrap.dedent(
    """
    import signal, sys, time
    from cellbench.runs.events import EventWriter
    from cellbench.runs.layout import RunPaths
    from cellbench.runs.lock import RunLock

    run = RunPaths(__import__("pathlib").Path(sys.argv[1]))
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append("SIGINT"))
    signal.signal(signal.SIGTERM, lambda *a: stop.append("SIGTERM"))
    with RunLock(run.lock), EventWriter(run.events) as events:
        events.emit("run_start", task="classify", model="m", resumed=False, start_epoch=0)
        while not stop:
            time.sleep(0.05)
        events.emit("run_end", status="interrupted", reason=f"{stop[0]} after epoch 0", best=None)
    """
)


def test_stop_key_asks_then_signals_the_runs_writer(store):
    """The writer is a real process holding the real lock (the trainer's own handling of the
    signal is tested with a real training in tests/runs/test_stop.py)."""
    run = store.create("live")
    run.config.write_text(CONFIG)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.root)])
    try:
        deadline = time.monotonic() + 30
        while not read_events(run.events, kind="run_start") and time.monotonic() < deadline:
            time.sleep(0.05)

        async def scenario(pilot):
            app = pilot.app
            await pilot.pause(0.3)
            await settle(pilot)
            assert app.current.status == "running"
            await pilot.press("s")
            await pilot.pause()
            assert type(app.screen).__name__ == "ConfirmScreen"
            assert f"to pid {proc.pid}" in shown(app.screen.query_one("#question"))
            await pilot.press("n")  # cancelled: nothing sent
            await pilot.pause()
            assert proc.poll() is None
            await pilot.press("s")
            await pilot.pause()
            await pilot.press("y")
            proc.wait(timeout=20)
            await pilot.pause(0.3)
            await settle(pilot)
            assert app.current.status == "interrupted"
            assert "retrain: cellbench train --run 0001-live" in shown(app.query_one(RunHeader))

        drive(CellbenchTUI(store.root, interval=0.05), scenario)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_events(run.events, kind="run_end")[-1]["status"] == "interrupted"


def test_stop_of_a_finished_run_says_it_is_not_running(store):
    write_finished_run(store, "done")

    async def scenario(pilot):
        await pilot.press("s")
        await pilot.pause()
        assert type(pilot.app.screen).__name__ != "ConfirmScreen"
        assert any("not running" in n.message for n in pilot.app._notifications)

    drive(CellbenchTUI(store.root), scenario)


def test_compare_overlays_the_marked_runs_and_lists_config_differences(store, tmp_path):
    write_gallery(store.root)

    async def scenario(pilot):
        app = pilot.app
        await pilot.press("c")  # nothing marked: a hint, no screen
        assert not isinstance(app.screen, CompareScreen)
        await pilot.press("space", "k", "k", "space")
        assert app.query_one(RunsTable).marked == ["0001-baseline", "0003-lr-high"]
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.metric == "val_loss"
        text = screen_text(app)
        assert "0001-baseline" in text and "0003-lr-high" in text and "train.lr" in text
        await pilot.press("right_square_bracket")
        assert screen.metric == "train_loss"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)

    drive(CellbenchTUI(store.root), scenario, size=(140, 40))


def test_config_differences_name_every_key_that_is_not_the_same():
    a = {"train": {"lr": 0.1, "epochs": 3}, "model": {"name": "x"}}
    b = {"train": {"lr": 0.2, "epochs": 3}, "model": {"name": "x", "drop": 0.1}}
    assert config_differences([a, b]) == {"train.lr": [0.1, 0.2], "model.drop": ["-", 0.1]}


def test_gpu_view_reads_nvml_or_says_quietly_there_is_none(store):
    write_finished_run(store, "one")
    readings, problem = read_gpus()
    assert (readings and problem is None) or (not readings and problem.startswith("no GPU"))

    async def scenario(pilot):
        await pilot.press("g")
        await pilot.pause(0.5)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(pilot.app.screen, GpuScreen)
        text = screen_text(pilot.app)
        assert ("no GPU" in text) if problem else (readings[0].name in text)
        await pilot.press("escape")

    drive(CellbenchTUI(store.root), scenario)


def test_80x24_keeps_names_whole_and_the_footer_shows_every_view(store):
    write_gallery(store.root)

    async def scenario(pilot):
        text = screen_text(pilot.app)
        for name in ("baseline", "wide", "lr-high"):
            assert f" {name} " in text
        footer = text.splitlines()[-1]
        for key in (
            "q Quit",
            "? Help",
            "m Curve",
            "l Log",
            "s Stop",
            "c Compare",
            "w Sweeps",
            "g GPUs",
        ):
            assert key in footer

    drive(CellbenchTUI(store.root), scenario, size=(80, 24))
