"""The sweep view (``cellbench tui --sweep S``) following a real two-trial sweep to its end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.tui.app import CellbenchTUI
from cellbench.tui.sweeps import SweepScreen, board_rows, progress_line
from tests.sweep.conftest import tiny_sets

from .screens import screen_text


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from cellbench.data.classify.shapes import write_shapes_dataset

    root = tmp_path_factory.mktemp("sweep-view-data") / "shapes"
    write_shapes_dataset(root, n_per_class=10, image_size=16, seed=0)
    return root


@pytest.mark.slow
def test_sweep_view_follows_a_real_two_trial_sweep_and_opens_a_trial(tmp_path, shapes):
    runs = tmp_path / "runs"
    argv = [
        sys.executable, "-m", "cellbench", "sweep", "--profile", "demo", *tiny_sets(shapes),
        "--grid", "train.lr=1e-3,3e-3", "--epochs", "2", "--workers", "2", "--name", "two",
        "--runs-dir", str(runs),
    ]  # fmt: skip
    sweep = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "sweeps" / "two" / "state.json"
    try:
        deadline = time.monotonic() + 120
        while not state_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        seen: dict = {"statuses": set()}

        async def main():
            tui = CellbenchTUI(runs, sweep="two", interval=0.5)
            async with tui.run_test(size=(160, 40)) as pilot:
                screen = tui.screen
                assert isinstance(screen, SweepScreen)
                end = time.monotonic() + 300
                while time.monotonic() < end:
                    await pilot.pause(0.5)
                    seen["statuses"] |= {r.get("status") for r in screen.rows}
                    done = [r for r in screen.rows if r.get("status") == "completed"]
                    if len(done) == 2 and all(r.get("mean") is not None for r in done):
                        break
                seen["text"] = screen_text(tui)
                seen["rows"] = list(screen.rows)
                await pilot.press("enter")  # the best trial (rank 1, first row) opens
                await pilot.pause(0.5)
                seen["selected"] = tui.selected
                seen["screen"] = type(tui.screen).__name__

        asyncio.run(main())
        sweep.wait(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0
    assert [r["status"] for r in seen["rows"]] == ["completed", "completed"]
    assert [r["rank"] for r in seen["rows"]] == [1, 2]
    assert "2/2 trials finished" in seen["text"]
    assert "val_loss" in seen["text"] and "(1)" in seen["text"]  # mean ± std (n) of one seed
    assert seen["screen"] != "SweepScreen" and seen["selected"] == seen["rows"][0]["run"]


def test_progress_line_and_live_statuses_from_the_state_file():
    state = {
        "status": "running",
        "phases": {"coarse": "completed", "seeds": "running"},
        "trials": {"t001": {"status": "completed"}, "t002": {"status": "running"}},
    }
    board = {"rows": [{"trial": "t001", "status": "completed", "rank": 1, "mean": 0.5,
                       "std": 0.1, "n": 3}]}  # fmt: skip
    line = progress_line(state).plain
    assert "running · 1/2 trials finished · 1 running · 1 completed" in line
    assert "phases: coarse completed → seeds running" in line
    rows = board_rows(state, board)
    assert [(r["trial"], r["status"]) for r in rows] == [("t001", "completed"), ("t002", "running")]


def test_tui_sweep_option_refuses_an_unknown_sweep_with_did_you_mean(tmp_path):
    (tmp_path / "sweeps" / "grid-a").mkdir(parents=True)
    (tmp_path / "sweeps" / "grid-a" / "state.json").write_text("{}")
    result = CliRunner().invoke(
        app, ["tui", "--sweep", "grid-b", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 3
    assert "no sweep 'grid-b' (did you mean 'grid-a'?)" in result.stderr
