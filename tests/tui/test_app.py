"""The Textual app, driven headless by Textual's pilot: what a user sees and the live path."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from cellbench.tui.app import CellbenchTUI
from cellbench.tui.widgets.memory import MemoryPanel
from cellbench.tui.widgets.run_info import MetricsLine, RunHeader
from cellbench.tui.widgets.run_view import RunView
from cellbench.tui.widgets.runs_table import RunsTable
from cellbench.tui.widgets.warnings import WarningsLog

from .conftest import epoch_event, write_finished_run

SIZE = (120, 40)


def shown(widget) -> str:
    """The text a Static shows, or the lines a RichLog holds."""
    if isinstance(widget, WarningsLog):
        return "\n".join(strip.text for strip in widget.lines)
    content = widget.content
    return getattr(content, "plain", str(content))


def table_rows(app: CellbenchTUI) -> list[list[str]]:
    table = app.query_one(RunsTable)
    return [[cell.plain.strip() for cell in table.get_row(key)] for key in table.rows]


async def settle(pilot) -> None:
    """Until the worker's read of the run folders is on screen."""
    for _ in range(500):
        await pilot.pause()
        if not pilot.app.polling:
            break
        await asyncio.sleep(0.01)
    await pilot.pause()


def drive(app: CellbenchTUI, scenario, size=SIZE) -> None:
    """Run ``scenario(pilot)`` against the app headless (sync tests, no pytest-asyncio needed)."""

    async def main():
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


def test_tui_modules_import_no_heavy_library():
    code = (
        "import sys, cellbench.tui.app, cellbench.tui.watch\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_runs_table_lists_runs_and_the_newest_is_shown(store):
    write_finished_run(store, "first")
    write_finished_run(store, "second", epochs=3)

    async def scenario(pilot):
        rows = table_rows(pilot.app)
        assert [r[:4] for r in rows] == [
            ["1", "first", "completed", "2"],
            ["2", "second", "completed", "3"],
        ]
        assert pilot.app.selected == "0002-second"
        header = shown(pilot.app.query_one(RunHeader))
        assert "completed" in header and "simple_cnn" in header and "151.1K params" in header
        assert "completed: 3 epochs" in header

    drive(CellbenchTUI(store.root), scenario)


def test_selecting_a_run_shows_its_metrics_memory_and_warnings(store):
    write_finished_run(store, "first")
    write_finished_run(store, "second", epochs=3)

    async def scenario(pilot):
        await pilot.press("k")  # up, to the first run
        await pilot.pause()
        assert pilot.app.selected == "0001-first"
        metrics = shown(pilot.app.query_one(MetricsLine))
        assert "epoch 2: train_loss 0.6 · val_loss 0.5 · val_accuracy 0.75" in metrics
        assert "best val_loss 0.5 @2" in metrics
        assert "no GPU (cpu)" in shown(pilot.app.query_one(MemoryPanel))
        warnings = pilot.app.query_one(WarningsLog)
        assert "warning initial_loss: loss 9 ≫ ln 4" in " ".join(shown(warnings).split())
        assert warnings.border_title == "warnings 1"
        await pilot.press("j")
        await pilot.pause()
        assert pilot.app.selected == "0002-second"

    drive(CellbenchTUI(store.root), scenario)


def test_new_events_appear_live(store, running_run):
    run, writer, history = running_run

    async def scenario(pilot):
        app = pilot.app
        assert app.selected == run.root.name
        assert "running" in shown(app.query_one(RunHeader))
        assert "no epoch finished yet" in shown(app.query_one(MetricsLine))
        version = app.watcher.get(run.root.name).version
        await pilot.pause(0.3)  # timer ticks with nothing new: nothing re-rendered
        assert app.watcher.get(run.root.name).version == version

        writer.emit("step", epoch=1, step=2, loss=1.2)
        epoch_event(writer, history, 1, 0.9)
        writer.emit("memory", device="cuda:0", allocated=2**30, reserved=2**31, peak=2**30, rss=1)
        writer.emit("warning", check="train_val_gap", severity="error", message="gap 0.4")
        await pilot.pause(0.3)  # the timer reads the appended lines
        assert "epoch 1: train_loss 1 · val_loss 0.9" in shown(app.query_one(MetricsLine))
        memory = shown(app.query_one(MemoryPanel))
        assert "GPU cuda:0 allocated 1.0 GB · reserved 2.0 GB · peak 1.0 GB" in memory
        assert "error   train_val_gap: gap 0.4" in shown(app.query_one(WarningsLog))
        assert table_rows(app)[0][2:4] == ["running", "1/3"]

        writer.emit("run_end", status="failed", reason="non-finite loss", best=None)
        await pilot.press("r")  # refresh now
        await settle(pilot)
        assert "failed: non-finite loss" in shown(app.query_one(RunHeader))
        assert table_rows(app)[0][2] == "failed"

    drive(CellbenchTUI(store.root, interval=0.05), scenario)


def test_run_option_preselects_and_follow_jumps_to_the_running_run(store):
    write_finished_run(store, "first")
    write_finished_run(store, "second")

    async def scenario(pilot):
        assert pilot.app.selected == "0001-first"
        assert pilot.app.query_one(RunView).border_title == "0001-first"
        await pilot.press("f")
        await pilot.pause()
        assert pilot.app.follow and pilot.app.selected == "0001-first"  # nothing is running

    drive(CellbenchTUI(store.root, run="1"), scenario)


def test_empty_runs_root_says_how_to_start_and_then_shows_a_new_run(store):
    async def scenario(pilot):
        app = pilot.app
        assert app.has_class("-empty")
        message = shown(app.query_one("#empty"))
        assert "No runs in" in message and "cellbench quickstart" in message
        assert app.query_one("#main").styles.display == "none"
        write_finished_run(store, "arrives")
        await pilot.press("r")
        await settle(pilot)
        assert not app.has_class("-empty")
        assert app.query_one("#main").styles.display == "block"
        assert app.selected == "0001-arrives"

    drive(CellbenchTUI(store.root), scenario)


def test_help_opens_and_q_quits(store):
    write_finished_run(store, "one")

    async def scenario(pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(pilot.app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert type(pilot.app.screen).__name__ != "HelpScreen"
        await pilot.press("q")
        await pilot.pause()
        assert not pilot.app.is_running

    drive(CellbenchTUI(store.root), scenario)


def test_a_real_training_opens_in_the_tui(store, shapes_dir):
    from cellbench.engine.session import TrainRequest, train

    overrides = [
        f"data.path={shapes_dir}",
        "data.image_size=32",
        "data.max_samples=null",
        "train.batch_size=16",
        "train.epochs=2",
        "train.log_every=1",
        "model.name=simple_cnn",
        "model.args={channels: [8, 16], hidden: 32}",
    ]
    paths, _ = train(TrainRequest(overrides=overrides, run="real", runs_dir=store.root))

    async def scenario(pilot):
        app = pilot.app
        watcher = app.watcher.get(paths.root.name)
        assert watcher.status == "completed" and watcher.epochs_done == 2
        assert len(watcher.step_curve()[0]) == len(watcher.state.steps) > 0
        assert max(watcher.step_curve()[0]) == 2.0  # the last step ends epoch 2
        assert "completed · epoch 2/2 · simple_cnn · cpu" in shown(app.query_one(RunHeader))
        assert "no GPU" in shown(app.query_one(MemoryPanel))
        assert "baselines" in shown(app.query_one(WarningsLog))

    drive(CellbenchTUI(store.root, run="real"), scenario)


def test_polling_goes_on_while_the_help_screen_is_open(store, running_run):
    run, writer, history = running_run

    async def scenario(pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        epoch_event(writer, history, 1, 0.9)
        await pilot.pause(0.3)  # several timer ticks with the help screen on top
        assert type(pilot.app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert "epoch 1: train_loss 1 · val_loss 0.9" in shown(pilot.app.query_one(MetricsLine))

    drive(CellbenchTUI(store.root, interval=0.05), scenario)


def test_a_damaged_run_is_marked_and_says_why_the_others_show_as_usual(store):
    write_finished_run(store, "first")
    damaged = write_finished_run(store, "second", epochs=3)
    with open(damaged.events, "a") as fh:
        fh.write('{"kind": "epoch", "epoch": "x"}\n')
    damaged.config.write_text("model: just-a-string\n")

    async def scenario(pilot):
        rows = table_rows(pilot.app)
        assert [r[:4] for r in rows] == [
            ["1", "first", "completed", "2"],
            ["2", "second", "completed!", "3"],  # what is readable, and "!"
        ]
        header = shown(pilot.app.query_one(RunHeader))
        flat = " ".join(header.split())
        assert "damaged: events.jsonl: 1 bad line skipped (line " in flat
        assert "epoch event: epoch: expected an integer >= 1, got 'x')" in flat
        assert "damaged: config.yaml: model: expected a mapping" in " ".join(header.split())
        await pilot.press("k")
        await pilot.pause()
        assert "damaged" not in shown(pilot.app.query_one(RunHeader))

    drive(CellbenchTUI(store.root), scenario)
