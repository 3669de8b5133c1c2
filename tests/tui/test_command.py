"""``cellbench tui``: options checked before the screen starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.store import RunStore
from cellbench.tui.app import CellbenchTUI

from .conftest import write_finished_run

runner = CliRunner()


def test_a_missing_run_exits_3_before_the_app_starts(store):
    write_finished_run(store, "digestive")
    result = runner.invoke(app, ["tui", "--run", "digestiv", "--runs-dir", str(store.root)])
    assert result.exit_code == 3
    assert "no run 'digestiv'" in result.stderr and "did you mean 'digestive'" in result.stderr


def test_help_names_the_keys():
    result = runner.invoke(app, ["tui", "--help"])
    assert result.exit_code == 0
    assert "--run" in result.stdout and "--runs-dir" in result.stdout


def test_a_run_path_opens_that_runs_folder_with_the_run_selected(tmp_path, monkeypatch):
    # Both runs folders hold a 0001-exp: the path names the other one, never ./runs/0001-exp.
    here, other = RunStore(tmp_path / "here" / "runs"), RunStore(tmp_path / "other" / "runs")
    write_finished_run(here, "exp")
    theirs = write_finished_run(other, "exp")
    seen = {}

    def run_headless(tui: CellbenchTUI) -> None:  # the real app, without a terminal
        async def main():
            async with tui.run_test(size=(120, 40)) as pilot:
                await pilot.pause()
                seen.update(root=tui.watcher.root, selected=tui.selected)

        asyncio.run(main())

    monkeypatch.setattr(CellbenchTUI, "run", run_headless)
    result = runner.invoke(app, ["tui", "--run", str(theirs.root), "--runs-dir", str(here.root)])
    assert result.exit_code == 0, result.output
    assert Path(seen["root"]).resolve() == other.root.resolve()
    assert seen["selected"] == "0001-exp"
