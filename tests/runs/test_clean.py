"""Planning and executing removals: kinds, sizes, ages, and every safety rule of runs/clean.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellbench.errors import BadInputError, RunConflict
from cellbench.runs import RunLock, RunPaths, RunStore
from cellbench.runs.clean import (
    ALL_RUN_KINDS,
    CHECKPOINT_KINDS,
    FRESH_KINDS,
    TRASH_PREFIX,
    Removal,
    execute,
    measure,
    plan_cache_clean,
    plan_features_clean,
    plan_run_clean,
)

CELLBENCH_MANIFEST = {"cellbench_version": "0.1.0", "shapes": {}}


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def trained_run(runs_root: Path) -> RunPaths:
    """A run folder with every output a training leaves behind."""
    run = RunStore(runs_root).create("digestive")
    run.config.write_text("task: classify\n")
    _write(run.last_checkpoint, 3000)
    _write(run.best_checkpoint, 2000)
    _write(run.events, 100)
    _write(run.history, 40)
    _write(run.metrics, 20)
    _write(run.eval_dir / "test" / "confusion.png", 500)
    _write(run.root / "lr_find.json", 10)
    return run


def _kinds(removals: list[Removal]) -> dict[str, str]:
    return {r.path.name: r.kind for r in removals}


def _live_foreign_lock(run: RunPaths) -> subprocess.Popen:
    """A lock held by another live process (a child that sleeps), as a training would hold it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run.lock.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "since": 0}))
    return child


def test_clean_run_plans_only_checkpoints(trained_run: RunPaths) -> None:
    removals = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    assert _kinds(removals) == {"checkpoints": "checkpoints"}
    assert removals[0].bytes == 5000  # last.pt + best.pt


def test_all_plans_everything_but_config(trained_run: RunPaths) -> None:
    names = _kinds(plan_run_clean(trained_run, ALL_RUN_KINDS))
    assert names == {
        "checkpoints": "checkpoints",
        "events.jsonl": "events",
        "history.csv": "history",
        "metrics.json": "metrics",
        "eval": "eval",
        "lr_find.json": "lr_find",
    }
    execute(plan_run_clean(trained_run, ALL_RUN_KINDS), [trained_run.root.parent])
    assert [p.name for p in trained_run.root.iterdir()] == ["config.yaml"]


def test_fresh_kinds_keep_the_event_log(trained_run: RunPaths) -> None:
    names = _kinds(plan_run_clean(trained_run, FRESH_KINDS))
    assert "events.jsonl" not in names
    assert {"checkpoints", "history.csv", "metrics.json", "eval", "lr_find.json"} == set(names)


def test_stray_checkpoint_files_count_as_checkpoints(trained_run: RunPaths) -> None:
    _write(trained_run.root / "best_model.pt", 70)
    names = _kinds(plan_run_clean(trained_run, CHECKPOINT_KINDS))
    assert names == {"checkpoints": "checkpoints", "best_model.pt": "checkpoints"}


def test_unknown_kind_is_a_programming_error(trained_run: RunPaths) -> None:
    with pytest.raises(ValueError, match="unknown clean kinds"):
        plan_run_clean(trained_run, {"weights"})


def test_sizes_and_ages(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    _write(folder / "a.npy", 1234)
    _write(folder / "sub" / "b.npy", 766)
    two_hours_ago = time.time() - 7200
    for p in (folder / "a.npy", folder / "sub" / "b.npy", folder / "sub", folder):
        os.utime(p, (two_hours_ago, two_hours_ago))
    removal = measure(folder, "cache")
    assert removal.bytes == 2000
    assert 7190 < removal.age_s < 7300


def test_execute_removes_and_reports_bytes(trained_run: RunPaths) -> None:
    plan = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    report = execute(plan, [trained_run.root.parent])
    assert not trained_run.checkpoints.exists()
    assert report.bytes_freed == 5000
    assert [r.path for r in report.removed] == [trained_run.checkpoints]
    assert trained_run.config.exists() and trained_run.events.exists()
    # nothing left behind: no trash folder survives a completed removal
    assert not [p for p in trained_run.root.iterdir() if p.name.startswith(TRASH_PREFIX)]


def test_missing_run_is_bad_input(runs_root: Path) -> None:
    with pytest.raises(BadInputError, match="no such run folder"):
        plan_run_clean(RunPaths(runs_root / "0009-nothing"), CHECKPOINT_KINDS)


def test_outside_root_refused_and_nothing_removed(tmp_path: Path, trained_run: RunPaths) -> None:
    outside = _write(tmp_path / "elsewhere" / "precious.pt", 10)
    inside = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    plan = [*inside, measure(outside, "checkpoints")]
    with pytest.raises(BadInputError, match="outside the runs and data roots"):
        execute(plan, [trained_run.root.parent])
    assert outside.exists()
    assert trained_run.last_checkpoint.exists()  # checked before the first removal


def test_dotdot_path_cannot_escape_the_root(tmp_path: Path, trained_run: RunPaths) -> None:
    outside = _write(tmp_path / "precious.txt", 10)
    sneaky = trained_run.root.parent / ".." / "precious.txt"
    with pytest.raises(BadInputError, match="outside"):
        execute([Removal(sneaky, "other", 10, 0.0)], [trained_run.root.parent])
    assert outside.exists()


def test_the_root_itself_is_never_removed(trained_run: RunPaths) -> None:
    root = trained_run.root.parent
    with pytest.raises(BadInputError, match="outside"):
        execute([measure(root, "other")], [root])
    assert root.exists()


def test_symlinked_file_is_unlinked_target_survives(tmp_path: Path, trained_run: RunPaths) -> None:
    target = _write(tmp_path / "shared" / "pretrained.pt", 4096)
    link = trained_run.checkpoints / "init.pt"
    link.symlink_to(target)
    plan = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    assert plan[0].bytes < 5000 + 4096  # the link counts as itself, not as its target
    execute(plan, [trained_run.root.parent])
    assert not trained_run.checkpoints.exists()
    assert target.read_bytes() == b"\0" * 4096


def test_symlinked_folder_is_unlinked_contents_survive(
    tmp_path: Path, trained_run: RunPaths
) -> None:
    shutil.rmtree(trained_run.eval_dir)
    target_dir = tmp_path / "shared_eval"
    kept = _write(target_dir / "report.json", 50)
    trained_run.eval_dir.symlink_to(target_dir, target_is_directory=True)
    removals = plan_run_clean(trained_run, {"eval"})
    assert len(removals) == 1 and removals[0].path.is_symlink()
    execute(removals, [trained_run.root.parent])
    assert not trained_run.eval_dir.is_symlink() and not trained_run.eval_dir.exists()
    assert kept.exists() and target_dir.is_dir()


def test_symlinked_run_folder_pointing_outside_is_refused(tmp_path: Path, runs_root: Path) -> None:
    real = tmp_path / "scratch" / "0005-linked"
    _write(real / "checkpoints" / "last.pt", 10)
    RunStore(runs_root).create("seed")  # the runs root exists
    (runs_root / "0005-linked").symlink_to(real, target_is_directory=True)
    run = RunStore(runs_root).resolve("linked")
    plan = plan_run_clean(run, CHECKPOINT_KINDS)
    with pytest.raises(BadInputError, match="outside"):
        execute(plan, [runs_root])
    assert (real / "checkpoints" / "last.pt").exists()


def test_run_locked_by_live_process_is_refused(trained_run: RunPaths) -> None:
    child = _live_foreign_lock(trained_run)
    try:
        with pytest.raises(RunConflict) as err:
            plan_run_clean(trained_run, CHECKPOINT_KINDS)
        assert err.value.exit_code == 4
        assert str(child.pid) in str(err.value)
    finally:
        child.kill()
        child.wait()
    assert trained_run.last_checkpoint.exists()


def test_lock_taken_after_planning_still_refused(trained_run: RunPaths) -> None:
    plan = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    child = _live_foreign_lock(trained_run)  # a training started between plan and execute
    try:
        with pytest.raises(RunConflict):
            execute(plan, [trained_run.root.parent])
    finally:
        child.kill()
        child.wait()
    assert trained_run.last_checkpoint.exists()


def test_own_lock_allows_fresh_start_cleaning(trained_run: RunPaths) -> None:
    # train --fresh takes the run lock, then cleans the run it holds
    with RunLock(trained_run.lock):
        execute(plan_run_clean(trained_run, FRESH_KINDS), [trained_run.root.parent])
    assert not trained_run.checkpoints.exists()


def test_stale_lock_of_dead_process_does_not_block(trained_run: RunPaths) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    trained_run.lock.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
    assert plan_run_clean(trained_run, CHECKPOINT_KINDS)


def test_crash_mid_delete_leaves_no_half_checkpoint_folder(
    trained_run: RunPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path, *args, **kwargs):
        raise OSError("simulated crash halfway through the delete")

    monkeypatch.setattr(shutil, "rmtree", crash)
    with pytest.raises(OSError, match="simulated crash"):
        execute(plan_run_clean(trained_run, CHECKPOINT_KINDS), [trained_run.root.parent])
    monkeypatch.undo()
    # the real name is gone at once; only an obviously dead trash folder is left ...
    assert not trained_run.checkpoints.exists()
    leftovers = [p for p in trained_run.root.iterdir() if p.name.startswith(TRASH_PREFIX)]
    assert len(leftovers) == 1
    # ... and the next clean of any kind picks it up
    plan = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    assert [r.kind for r in plan] == ["trash"]
    execute(plan, [trained_run.root.parent])
    assert not any(p.name.startswith(TRASH_PREFIX) for p in trained_run.root.iterdir())


def test_vanished_path_is_skipped(trained_run: RunPaths) -> None:
    plan = plan_run_clean(trained_run, CHECKPOINT_KINDS)
    shutil.rmtree(trained_run.checkpoints)
    report = execute(plan, [trained_run.root.parent])
    assert report.removed == [] and report.bytes_freed == 0


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root with a raw dataset, a prepared store (per-fold manifests) and a feature store."""
    root = tmp_path / "data"
    raw = root / "PanNuke" / "Fold 1" / "images" / "fold1"
    _write(raw / "images.npy", 900)
    (root / "PanNuke" / "manifest.json").write_text(json.dumps({"name": "PanNuke", "version": 1}))
    for k in (1, 2):
        _write(root / "cache" / "pannuke" / f"fold{k}" / "images.npy", 300)
        (root / "cache" / "pannuke" / f"fold{k}" / "manifest.json").write_text(
            json.dumps(CELLBENCH_MANIFEST)
        )
    _write(root / "features" / "vit_s" / "fold1" / "cls.npy", 200)
    (root / "features" / "vit_s" / "manifest.json").write_text(json.dumps(CELLBENCH_MANIFEST))
    _write(root / "features" / "half_done" / "fold1" / "cls.npy", 10)  # no manifest yet
    return root


def test_cache_plan_lists_only_cellbench_stores(data_root: Path) -> None:
    plan = plan_cache_clean(data_root)
    found = {str(r.path.relative_to(data_root)): (r.kind, r.bytes) for r in plan}
    assert found == {
        "cache/pannuke": ("cache", 600 + 2 * len(json.dumps(CELLBENCH_MANIFEST))),
        "features/vit_s": ("features", 200 + len(json.dumps(CELLBENCH_MANIFEST))),
    }


def test_raw_dataset_never_touched(data_root: Path) -> None:
    execute(plan_cache_clean(data_root), [data_root])
    assert (data_root / "PanNuke" / "Fold 1" / "images" / "fold1" / "images.npy").exists()
    assert not (data_root / "cache" / "pannuke").exists()
    # even a hand-made plan naming the raw folder as a cache is refused
    forged = [measure(data_root / "PanNuke", "cache")]
    with pytest.raises(BadInputError, match="no cellbench manifest"):
        execute(forged, [data_root])
    assert (data_root / "PanNuke" / "manifest.json").exists()


def test_symlinked_store_is_not_followed_by_cache_scan(tmp_path: Path, data_root: Path) -> None:
    elsewhere = tmp_path / "big_disk" / "store"
    _write(elsewhere / "images.npy", 10)
    (elsewhere / "manifest.json").write_text(json.dumps(CELLBENCH_MANIFEST))
    (data_root / "linked_store").symlink_to(elsewhere, target_is_directory=True)
    assert "linked_store" not in {r.path.name for r in plan_cache_clean(data_root)}


def test_features_plan(data_root: Path) -> None:
    plan = plan_features_clean(data_root, "half_done")
    assert [(r.path.name, r.kind, r.bytes) for r in plan] == [("half_done", "features", 10)]
    execute(plan, [data_root])
    assert not (data_root / "features" / "half_done").exists()
    assert (data_root / "features" / "vit_s").exists()


@pytest.mark.parametrize("tag", ["missing", "../cache", ".."])
def test_features_bad_tag_is_bad_input(data_root: Path, tag: str) -> None:
    with pytest.raises(BadInputError):
        plan_features_clean(data_root, tag)


def test_missing_data_root_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such data folder"):
        plan_cache_clean(tmp_path / "nope")
