"""The root command: help without torch, --version, exit codes, runs list/show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellbench import __version__
from cellbench.cli.app import app
from cellbench.runs.events import EventWriter
from cellbench.runs.store import RunStore

runner = CliRunner()
HEAVY = ("torch", "timm", "torchvision", "datasets")


def _command_paths():
    """Every command and group below the root, e.g. ["data"], ["data", "synth"], ["train"]."""
    import typer.main

    def walk(command, prefix):
        for name, sub in getattr(command, "commands", {}).items():
            yield [*prefix, name]
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize("args", [["--help"], *[[*p, "--help"] for p in _command_paths()]])
def test_help_does_not_import_heavy_modules(args):
    code = (
        "import sys\n"
        "from cellbench.cli.app import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cellbench {__version__}"


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "cellbench", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_unknown_command_is_usage_error():
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_runs_list_empty_json(tmp_path):
    result = runner.invoke(app, ["runs", "list", "--json", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_runs_list_and_show(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("digestive")
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="simple_cnn")
        w.emit(
            "epoch",
            epoch=1,
            train_loss=1.0,
            val_loss=0.9,
            best={"metric": "accuracy", "value": 0.75, "epoch": 1},
        )
        w.emit(
            "run_end", status="completed", best={"metric": "accuracy", "value": 0.75, "epoch": 1}
        )
    result = runner.invoke(app, ["runs", "list", "--json", "--runs-dir", str(tmp_path)])
    rows = json.loads(result.stdout)
    assert [(r["id"], r["name"], r["status"], r["epochs"], r["best_value"]) for r in rows] == [
        (1, "digestive", "completed", 1, 0.75)
    ]
    table = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path)])
    assert table.exit_code == 0 and "digestive" in table.stdout and "completed" in table.stdout
    shown = runner.invoke(app, ["runs", "show", "1", "--json", "--runs-dir", str(tmp_path)])
    assert json.loads(shown.stdout)["folder"] == "0001-digestive"
    human = runner.invoke(app, ["runs", "show", "digestive", "--runs-dir", str(tmp_path)])
    assert human.exit_code == 0 and "accuracy=0.75" in human.stdout


def test_runs_show_missing_run_exits_3_with_one_line(tmp_path):
    result = runner.invoke(app, ["runs", "show", "9", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "no run '9'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_runs_dir_from_environment(tmp_path):
    RunStore(tmp_path).create("from-env")
    result = runner.invoke(
        app, ["runs", "list", "--json"], env={"CELLBENCH_RUNS_DIR": str(tmp_path)}
    )
    assert json.loads(result.stdout)[0]["name"] == "from-env"


def test_unforeseen_os_errors_are_one_line_exit_3(tmp_path):
    import typer

    from cellbench.cli.app import CellbenchGroup

    probe = typer.Typer(cls=CellbenchGroup)

    @probe.command()
    def read(path: str) -> None:
        Path(path).read_text()

    @probe.command()
    def other() -> None: ...

    result = runner.invoke(probe, ["read", str(tmp_path)])  # a folder where a file is expected
    assert result.exit_code == 3
    assert result.stderr.strip() == f"error: {tmp_path}: Is a directory"


def test_messages_with_brackets_are_printed_literally(tmp_path):
    run = RunStore(tmp_path).create("r")
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify")
        w.emit("warning", check="initial_loss", severity="warning", message="loss [bold]x too high")
    result = runner.invoke(app, ["runs", "show", "r", "--runs-dir", str(tmp_path)])
    assert "[initial_loss] loss [bold]x too high" in result.stdout


def test_help_texts_survive_rich_markup():
    # square brackets in a help string are Rich markup and vanish: defaults are written (...)
    result = runner.invoke(app, ["runs", "list", "--help"])
    assert "Folder holding the runs (default: ./runs)." in result.stdout
    synth = runner.invoke(app, ["data", "synth", "--help"])
    assert "(default: 256 pannuke, 32 shapes)" in synth.stdout


def _finished_run(store: RunStore, name: str, accuracy: float) -> None:
    run = store.create(name)
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="simple_cnn")
        w.emit("run_end", status="completed", best={"metric": "accuracy", "value": accuracy})
    run.history.write_text(f"epoch,train_loss,val_accuracy\n1,1.0,{accuracy}\n")


def test_runs_show_and_compare_take_a_path_to_another_projects_run(tmp_path, monkeypatch):
    # Both projects hold a 0001-exp: the path names the other project's, never ./runs/0001-exp.
    _finished_run(RunStore(tmp_path / "here" / "runs"), "exp", 0.25)
    _finished_run(RunStore(tmp_path / "other" / "runs"), "exp", 0.75)
    monkeypatch.chdir(tmp_path / "here")
    other = str(tmp_path / "other" / "runs" / "0001-exp")
    shown = runner.invoke(app, ["runs", "show", other, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["best_value"] == 0.75
    compared = runner.invoke(app, ["runs", "compare", "1", other, "--json"])
    assert compared.exit_code == 0, compared.output
    finals = [r["metrics"]["val_accuracy"]["final"] for r in json.loads(compared.stdout)]
    assert finals == [0.25, 0.75]


def test_under_torchrun_another_rank_leaves_the_error_and_the_exit_to_rank_0(tmp_path):
    """Every rank meets a refusal; were rank 1 to exit first, torchrun would SIGTERM rank 0
    before it said why (the CI failure: exit 143, no message). Rank 1 waits, silent, until
    torchrun ends it."""
    import os
    import signal
    import time

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    args = [sys.executable, "-m", "cellbench", "runs", "show", "nope", "--runs-dir", str(tmp_path)]
    rank_1 = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(5)  # rank 0 would have said it and exited long before (startup ~0.5 s)
        assert rank_1.poll() is None
        rank_1.send_signal(signal.SIGTERM)  # torchrun, once rank 0 exited
        _, err = rank_1.communicate(timeout=30)
    finally:
        rank_1.kill()
    assert rank_1.returncode == -signal.SIGTERM and err == ""


def test_a_rank_whose_error_rank_0_never_met_says_it_itself(tmp_path, monkeypatch):
    import cellbench.cli.app as cli_app

    monkeypatch.setattr(cli_app, "RANK_0_EXIT_WAIT_S", 0.01)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, ["runs", "show", "nope", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert result.output.startswith("error: rank 1: ") and "nope" in result.output
