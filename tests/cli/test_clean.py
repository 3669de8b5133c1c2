"""``cellbench clean`` end to end through the CLI: exit codes, confirmation, dry run, JSON, CUDA."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cellbench.cli.clean as clean_cli
from cellbench.cli.app import app
from cellbench.runs import RunPaths, RunStore

runner = CliRunner()


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def run(runs_root: Path) -> RunPaths:
    run = RunStore(runs_root).create("digestive")
    run.config.write_text("task: classify\n")
    run.checkpoints.mkdir()
    run.last_checkpoint.write_bytes(b"\0" * 3000)
    run.best_checkpoint.write_bytes(b"\0" * 2000)
    run.events.write_text('{"kind": "run_start"}\n')
    run.history.write_text("epoch,loss\n")
    return run


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "images.npy").write_bytes(b"\0" * 100)
    store = root / "demo"
    (store / "fold1").mkdir(parents=True)
    (store / "fold1" / "images.npy").write_bytes(b"\0" * 700)
    (store / "manifest.json").write_text(json.dumps({"cellbench_version": "0.1.0"}))
    features = root / "features" / "vit_s" / "fold1"
    features.mkdir(parents=True)
    (features / "cls.npy").write_bytes(b"\0" * 300)
    return root


def clean(*args: str, input: str | None = None):
    return runner.invoke(app, ["clean", *args], input=input)


def test_nothing_asked_is_usage_error() -> None:
    result = clean()
    assert result.exit_code == 2
    assert "--run RUN" in result.output


def test_all_without_run_is_usage_error(runs_root: Path) -> None:
    result = clean("--all", "--runs-dir", str(runs_root))
    assert result.exit_code == 2


def test_missing_run_exits_3(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "digestiv", "--yes", "--runs-dir", str(runs_root))
    assert result.exit_code == 3
    assert "no run 'digestiv'" in result.output and "did you mean" in result.output


def test_without_yes_and_no_tty_refuses(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "digestive", "--runs-dir", str(runs_root))
    assert result.exit_code == 2
    assert "--yes" in result.output and "nothing was removed" in result.output
    assert run.last_checkpoint.exists()


def test_shows_plan_with_sizes_then_removes_with_yes(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "1", "--yes", "--runs-dir", str(runs_root))
    assert result.exit_code == 0, result.output
    assert "checkpoints" in result.output and "4.9 KB" in result.output
    assert "removed 1 item(s)" in result.output
    assert not run.checkpoints.exists()
    assert run.events.exists() and run.config.exists()


def test_dry_run_removes_nothing(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "digestive", "--all", "--dry-run", "--runs-dir", str(runs_root))
    assert result.exit_code == 0
    assert "dry run: nothing removed" in result.output
    assert "events.jsonl" in result.output
    assert run.last_checkpoint.exists() and run.events.exists() and run.history.exists()


def test_json_lists_what_was_removed(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "digestive", "--all", "--yes", "--json", "--runs-dir", str(runs_root))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["dry_run"] is False
    assert {Path(r["path"]).name: r["kind"] for r in data["removed"]} == {
        "checkpoints": "checkpoints",
        "events.jsonl": "events",
        "history.csv": "history",
    }
    assert data["bytes_freed"] == sum(r["bytes"] for r in data["removed"])
    assert data["bytes_freed"] == 5000 + len('{"kind": "run_start"}\n') + len("epoch,loss\n")
    assert [p.name for p in run.root.iterdir()] == ["config.yaml"]


def test_json_dry_run_lists_what_would_go(run: RunPaths, runs_root: Path) -> None:
    result = clean("--run", "digestive", "--dry-run", "--json", "--runs-dir", str(runs_root))
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["bytes_freed"] == 5000
    assert run.last_checkpoint.exists()


def test_confirmation_declined_keeps_everything(
    run: RunPaths, runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clean_cli, "_stdin_is_tty", lambda: True)
    result = clean("--run", "digestive", "--runs-dir", str(runs_root), input="n\n")
    assert result.exit_code == 0
    assert "Remove 1 item(s)" in result.output and "Nothing removed" in result.output
    assert run.last_checkpoint.exists()


def test_confirmation_accepted_removes(
    run: RunPaths, runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clean_cli, "_stdin_is_tty", lambda: True)
    result = clean("--run", "digestive", "--runs-dir", str(runs_root), input="y\n")
    assert result.exit_code == 0
    assert not run.checkpoints.exists()


def test_live_locked_run_exits_4(run: RunPaths, runs_root: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.lock.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
        result = clean("--run", "digestive", "--yes", "--runs-dir", str(runs_root))
    finally:
        child.kill()
        child.wait()
    assert result.exit_code == 4
    assert f"locked by pid {child.pid}" in result.output
    assert run.last_checkpoint.exists()


def test_clean_leaves_no_lock_behind(run: RunPaths, runs_root: Path) -> None:
    assert clean("--run", "digestive", "--yes", "--runs-dir", str(runs_root)).exit_code == 0
    assert not run.lock.exists()


def test_features_removes_the_store(data_root: Path) -> None:
    result = clean("--features", "vit_s", "--yes", "--data-dir", str(data_root))
    assert result.exit_code == 0, result.output
    assert not (data_root / "features" / "vit_s").exists()
    assert (data_root / "demo").exists()


def test_features_missing_tag_exits_3(data_root: Path) -> None:
    result = clean("--features", "nope", "--yes", "--data-dir", str(data_root))
    assert result.exit_code == 3
    assert "no such feature store" in result.output and "vit_s" in result.output


def test_cache_lists_size_and_age_and_spares_raw_data(data_root: Path) -> None:
    listed = clean("--cache", "--dry-run", "--json", "--data-dir", str(data_root))
    data = json.loads(listed.stdout)
    assert [Path(r["path"]).name for r in data["removed"]] == ["demo"]
    assert data["removed"][0]["bytes"] == 700 + len(json.dumps({"cellbench_version": "0.1.0"}))
    assert data["removed"][0]["age_s"] >= 0
    result = clean("--cache", "--yes", "--data-dir", str(data_root))
    assert result.exit_code == 0
    assert not (data_root / "demo").exists()
    assert (data_root / "raw" / "images.npy").exists()


def test_nothing_to_remove(run: RunPaths, runs_root: Path) -> None:
    clean("--run", "digestive", "--yes", "--runs-dir", str(runs_root))
    result = clean("--run", "digestive", "--yes", "--runs-dir", str(runs_root))
    assert result.exit_code == 0 and "Nothing to remove" in result.output


def test_cuda_reports_and_exits_0() -> None:
    result = clean("--cuda")
    assert result.exit_code == 0
    assert "gc: collected" in result.output
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA GPU" in result.output
    else:
        assert "returns only when that process exits" in result.output


def test_cuda_json(run: RunPaths, runs_root: Path) -> None:
    result = clean("--cuda", "--json")
    data = json.loads(result.stdout)
    assert data["removed"] == [] and isinstance(data["cuda"]["gc_collected"], int)
    assert "another process" in data["cuda"]["note"]
