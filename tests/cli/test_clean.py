"""``cellbench clean`` end to end through the CLI: exit codes, confirmation, dry run, JSON, CUDA."""

from __future__ import annotations

import json
import shutil
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


# --- issue 8: clean never deletes what cellbench did not write ---------------------------------


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_issue_case_1_prepare_refuses_a_folder_holding_raw_data(tmp_path: Path) -> None:
    d = tmp_path / "d"
    raw = d / "proj" / "raw"
    synth = _cli("data", "synth", "--out", str(raw), "--tiles", "16", "--seed", "0", "--size", "32")
    assert synth.exit_code == 0, synth.output
    raw_files = sorted(str(p) for p in raw.rglob("*"))
    prepared = _cli("data", "prepare", "--pannuke", str(raw), "--out", str(d / "proj"))
    assert prepared.exit_code == 3
    assert f"{d / 'proj'}: folder is not empty and is not a cellbench store" in prepared.stderr
    assert "raw" in prepared.stderr and len(prepared.stderr.strip().splitlines()) == 1
    assert not (d / "proj" / "manifest.json").exists()
    result = clean("--cache", "--data-dir", str(d), "--yes")
    assert result.exit_code == 0 and "Nothing to remove" in result.output
    assert sorted(str(p) for p in raw.rglob("*")) == raw_files


def test_store_that_already_holds_raw_data_loses_only_its_own_files(tmp_path: Path) -> None:
    # A store written before the refusal existed (or raw data moved into a store later).
    d = tmp_path / "d"
    source = tmp_path / "source"
    assert _cli("data", "synth", "--out", str(source), "--folds", "1", "--tiles", "2",
                "--size", "32").exit_code == 0  # fmt: skip
    assert _cli("data", "prepare", "--pannuke", str(source), "--out", str(d / "proj"),
                "--folds", "1").exit_code == 0  # fmt: skip
    # synth refuses a folder inside a store now (docs/outputs.md): raw data moved in by hand
    assert _cli("data", "synth", "--out", str(tmp_path / "raw"), "--folds", "1", "--tiles", "2",
                "--size", "32").exit_code == 0  # fmt: skip
    shutil.move(tmp_path / "raw", d / "proj" / "raw")
    raw_files = {p: p.read_bytes() for p in (d / "proj" / "raw").rglob("*") if p.is_file()}
    dry = clean("--cache", "--dry-run", "--json", "--data-dir", str(d))
    planned = json.loads(dry.stdout)
    assert [Path(r["path"]).name for r in planned["removed"]] == ["proj"]
    [skipped] = planned["skipped"]
    assert skipped["path"] == str(d / "proj") and skipped["kept"] == [str(d / "proj" / "raw")]
    assert "did not write" in skipped["reason"]
    result = clean("--cache", "--data-dir", str(d), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"][0]["kept"] == [str(d / "proj" / "raw")]
    assert sorted(p.name for p in (d / "proj").iterdir()) == ["raw"]
    assert {p: p.read_bytes() for p in (d / "proj" / "raw").rglob("*") if p.is_file()} == raw_files


def test_kept_folders_are_shown_in_the_table(data_root: Path) -> None:
    (data_root / "demo" / "notes.txt").write_text("mine")
    result = clean("--cache", "--dry-run", "--data-dir", str(data_root))
    assert result.exit_code == 0
    assert "Kept (skipped)" in result.output and "notes.txt" in result.output
    assert "cellbench's files only" in result.output


@pytest.mark.parametrize("where", ["/", "~", "home-via-dotdot", "link-to-home"])
def test_data_dir_root_or_home_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "link").symlink_to(home, target_is_directory=True)
    data_dir = {
        "/": "/",
        "~": "~",
        "home-via-dotdot": str(home / "data" / ".."),
        "link-to-home": str(tmp_path / "link"),
    }[where]
    for flag in (["--cache"], ["--features", "vit_s"]):
        result = clean(*flag, "--dry-run", "--data-dir", data_dir)
        assert result.exit_code == 2, result.output
        assert "--data-dir" in result.output and "Traceback" not in result.output


def _two_projects(tmp_path: Path) -> tuple[RunPaths, RunPaths]:
    """Two projects whose runs folders both hold a 0001-exp with checkpoints."""
    runs = []
    for project in ("here", "other"):
        run = RunStore(tmp_path / project / "runs").create("exp")
        run.config.write_text("task: classify\n")
        run.checkpoints.mkdir()
        run.last_checkpoint.write_bytes(b"\0" * 10)
        runs.append(run)
    return runs[0], runs[1]


def test_issue_case_2_a_path_names_that_folder_not_its_last_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, other = _two_projects(tmp_path)
    monkeypatch.chdir(tmp_path / "here")  # ./runs holds a 0001-exp too
    result = clean("--run", str(other.root), "--yes")
    assert result.exit_code == 0, result.output
    assert not other.checkpoints.exists()
    assert here.last_checkpoint.exists()  # ./runs/0001-exp untouched
    # relative, with .. and a trailing slash: the same folder
    other.checkpoints.mkdir()
    result = clean("--run", "../other/runs/0001-exp/", "--yes")
    assert result.exit_code == 0 and not other.checkpoints.exists() and here.checkpoints.exists()


def test_a_path_that_is_not_a_run_folder_is_refused(tmp_path: Path) -> None:
    here, other = _two_projects(tmp_path)
    for ref, message in (
        (str(other.root.parent / "0001-exq"), "no such folder (did you mean '0001-exp'?)"),
        (str(other.root / "checkpoints"), "not a run folder"),
    ):
        result = clean("--run", ref, "--yes", "--runs-dir", str(here.root.parent))
        assert result.exit_code == 3 and message in result.output
    assert here.last_checkpoint.exists() and other.last_checkpoint.exists()


def test_two_cleans_at_once_both_succeed_and_keep_the_users_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k in range(6):
        store = data / f"store{k}"
        for fold in (1, 2, 3):
            (store / f"fold{fold}").mkdir(parents=True)
            (store / f"fold{fold}" / "images.npy").write_bytes(b"\0" * 1000)
            manifest = {"format": "cellbench-nuclei-store", "files": ["images.npy"]}
            (store / f"fold{fold}" / "manifest.json").write_text(json.dumps(manifest))
        (store / "manifest.json").write_text(json.dumps({"format": "cellbench-nuclei-store"}))
        (store / "fold2" / "mine.txt").write_text("keep")
    command = [sys.executable, "-m", "cellbench", "clean", "--cache", "--yes", "--data-dir"]
    procs = [subprocess.Popen([*command, str(data)], stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for k in range(6):
        assert sorted(p.relative_to(data).as_posix() for p in (data / f"store{k}").rglob("*")) == [
            f"store{k}/fold2",
            f"store{k}/fold2/mine.txt",
        ]


def test_relative_data_dir_keeps_the_users_files(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = data_root / "demo" / "raw" / "images.npy"
    raw.parent.mkdir()
    raw.write_bytes(b"raw")
    monkeypatch.chdir(data_root.parent)
    result = clean("--cache", "--yes", "--json", "--data-dir", data_root.name)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"][0]["kept"] == [str(raw.parent)]
    assert raw.read_bytes() == b"raw" and not (data_root / "demo" / "manifest.json").exists()
    assert not (data_root / "demo" / "fold1").exists()


def test_real_feature_store_loses_only_what_features_extract_wrote(
    fx_store: Path, tiny_vit: Path
) -> None:
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    data = fx_store.parent  # the data root holds the nuclei store, which holds features/<tag>/
    root, _ = extract_features(fx_store, build_backbone(str(tiny_vit), device="cpu"), folds=[1])
    mine = root / "fold1" / "my_umap.png"
    mine.write_bytes(b"png")
    result = clean("--features", root.name, "--yes", "--json", "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"][0]["kept"] == [str(mine)]
    assert (data / "tiny-vit.yaml").exists()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "fold1",
        "fold1/my_umap.png",
    ]
    assert (fx_store / "fold1" / "images.npy").exists()  # the nuclei store is not a feature store
    # --cache takes the nuclei store with its feature stores, and still keeps the user's file
    result = clean("--cache", "--yes", "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(data).as_posix() for p in fx_store.rglob("*")) == [
        "store/features",
        f"store/features/{root.name}",
        f"store/features/{root.name}/fold1",
        f"store/features/{root.name}/fold1/my_umap.png",
    ]
