"""``cellbench tui``: options checked before the screen starts."""

from __future__ import annotations

from typer.testing import CliRunner

from cellbench.cli.app import app

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
