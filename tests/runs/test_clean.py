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

from cellbench.errors import BadInputError, RunConflict, UsageError
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
    _write(real / "config.yaml", 10)
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


# --- ownership: only the files a store's manifests list ------------------------------------------

STORE_MANIFEST = {"format": "cellbench-nuclei-store", "cellbench_version": "0.1.0"}


def _store(root: Path, files: bool = True) -> Path:
    """A canonical store as prepare writes it: root manifest, fold1 with its listed files."""
    names = ["images.npy", "inst.npy", "types.npy", "hv.npy", "tissues.json"]
    for name in names:
        _write(root / "fold1" / name, 100)
    fold = {**STORE_MANIFEST, "fold": 1, **({"files": names} if files else {})}
    (root / "fold1" / "manifest.json").write_text(json.dumps(fold))
    (root / "manifest.json").write_text(
        json.dumps({**STORE_MANIFEST, **({"files": []} if files else {})})
    )
    return root


@pytest.mark.parametrize("files", [True, False], ids=["files-listed", "old-store"])
def test_store_with_a_user_file_keeps_the_folder_and_the_file(tmp_path: Path, files) -> None:
    data = tmp_path / "data"
    store = _store(data / "proj", files)
    notes = _write(store / "notes.txt", 5)
    raw = _write(store / "raw" / "Fold 1" / "images" / "fold1" / "images.npy", 900)
    user_in_fold = _write(store / "fold1" / "my_labels.csv", 7)
    [plan] = plan_cache_clean(data)
    assert plan.bytes == 500 + sum(
        len(p.read_bytes()) for p in (store / "manifest.json", store / "fold1" / "manifest.json")
    )
    assert sorted(p.name for p in plan.kept) == ["my_labels.csv", "notes.txt", "raw"]
    assert "3 item(s) cellbench did not write" in plan.skipped
    report = execute([plan], [data])
    # everything cellbench wrote is gone ...
    assert not (store / "manifest.json").exists()
    assert sorted(p.name for p in (store / "fold1").iterdir()) == ["my_labels.csv"]
    # ... and everything else is exactly as it was
    assert notes.exists() and raw.read_bytes() == b"\0" * 900 and user_in_fold.exists()
    assert [r.path for r in report.removed] == [store]
    assert [r.path for r in report.skipped] == [store]
    assert report.to_dict()["skipped"][0]["kept"] == sorted(
        str(p) for p in (user_in_fold, notes, store / "raw")
    )


def test_fully_owned_store_goes_whole_and_folders_left_empty_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = _store(data / "nested" / "store")
    report = execute(plan_cache_clean(data), [data])
    assert not store.exists() and (data / "nested").is_dir()
    assert report.skipped == [] and report.bytes_freed > 500


def test_store_files_symlinked_outside_are_unlinked_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = _store(data / "store")
    precious = _write(tmp_path / "elsewhere" / "images.npy", 4000)
    (store / "fold1" / "images.npy").unlink()
    (store / "fold1" / "images.npy").symlink_to(precious)
    (store / "fold1" / "linked_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    [plan] = plan_cache_clean(data)
    assert plan.bytes < 4000 and [p.name for p in plan.kept] == ["linked_dir"]
    execute([plan], [data])
    assert precious.read_bytes() == b"\0" * 4000
    assert not (store / "fold1" / "images.npy").is_symlink()
    assert (store / "fold1" / "linked_dir").is_symlink()  # not ours: kept as it is


def test_manifest_listing_paths_outside_never_reaches_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = _write(tmp_path / "etc" / "passwd", 30)
    store = data / "store"
    evil = ["../../etc/passwd", str(secret), "fold1/../../../etc/passwd", "own.npy"]
    _write(store / "own.npy", 10)
    (store / "manifest.json").write_text(json.dumps({**STORE_MANIFEST, "files": evil}))
    report = execute(plan_cache_clean(data), [data])
    assert secret.read_bytes() == b"\0" * 30
    assert not store.exists() and report.bytes_freed == 10 + len(
        json.dumps({**STORE_MANIFEST, "files": evil})
    )


def test_store_being_prepared_is_skipped_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = _store(data / "store")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (store / f".fold2.tmp-{child.pid}").mkdir()
        [plan] = plan_cache_clean(data)
        assert not plan.removes and "live cellbench process" in plan.skipped
        report = execute([plan], [data])
    finally:
        child.kill()
        child.wait()
    assert report.removed == [] and (store / "fold1" / "images.npy").exists()


def test_hand_made_plan_of_a_store_still_removes_only_its_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = _store(data / "store")
    mine = _write(store / "mine.txt", 3)
    execute([measure(store, "cache")], [data])  # a Removal without ownership: planned again
    assert sorted(p.name for p in store.iterdir()) == ["mine.txt"] and mine.exists()


def test_features_tag_with_a_foreign_manifest_is_skipped(data_root: Path) -> None:
    store = data_root / "features" / "theirs"
    _write(store / "fold1" / "cls.npy", 10)
    (store / "manifest.json").write_text("{not json")
    [plan] = plan_features_clean(data_root, "theirs")
    assert not plan.removes and "not JSON" in plan.skipped
    execute([plan], [data_root])
    assert (store / "fold1" / "cls.npy").exists()


def _read_only(folder: Path):
    """Make ``folder`` really read-only, even for root (which ignores permission bits)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a folder read-only")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i refused here: {done.stderr.decode().strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_store_folder_is_one_error_and_nothing_removed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = _store(data / "store")
    _write(store / "notes.txt", 1)  # partial removal: files go one by one from fold1 and root
    _write(store / "fold2" / "images.npy", 5)
    (store / "fold2" / "manifest.json").write_text(
        json.dumps({**STORE_MANIFEST, "files": ["images.npy"]})
    )
    before = sorted(str(p) for p in store.rglob("*"))
    undo = _read_only(store / "fold2")
    try:
        with pytest.raises(BadInputError, match=r"fold2: read-only folder.*nothing removed"):
            execute(plan_cache_clean(data), [data])
    finally:
        undo()
    assert sorted(str(p) for p in store.rglob("*")) == before


def test_read_only_checkpoints_folder_is_one_error_and_nothing_removed(
    trained_run: RunPaths,
) -> None:
    undo = _read_only(trained_run.checkpoints)
    try:
        with pytest.raises(BadInputError, match="checkpoints: read-only folder"):
            execute(plan_run_clean(trained_run, ALL_RUN_KINDS), [trained_run.root.parent])
    finally:
        undo()
    assert trained_run.last_checkpoint.exists() and trained_run.history.exists()


@pytest.mark.parametrize("where", ["root", "home", "home-dotdot", "home-link", "above-home"])
def test_data_root_refuses_the_filesystem_root_and_home(tmp_path, monkeypatch, where) -> None:
    home = tmp_path / "users" / "me"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "to_home").symlink_to(home, target_is_directory=True)
    data_dir = {
        "root": Path("/"),
        "home": Path("~"),
        "home-dotdot": home / "data" / "..",
        "home-link": tmp_path / "to_home",
        "above-home": tmp_path / "users",
    }[where]
    for plan in (plan_cache_clean, lambda d: plan_features_clean(d, "vit_s")):
        with pytest.raises(UsageError, match="--data-dir") as err:
            plan(data_dir)
        assert err.value.exit_code == 2
    assert plan_cache_clean(home / "data") == []  # a folder inside home is fine


def _feature_tag(store: Path, tag: str) -> Path:
    root = store / "features" / tag
    _write(root / "fold1" / "cls.npy", 50)
    fold = {"format": "cellbench-feature-store", "files": ["cls.npy", "manifest.json"]}
    (root / "fold1" / "manifest.json").write_text(json.dumps(fold))
    top = {"format": "cellbench-feature-store", "files": ["fold1/cls.npy", "manifest.json"]}
    (root / "manifest.json").write_text(json.dumps(top))
    return root


def test_features_tag_is_found_in_the_store_under_the_data_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tag = _feature_tag(_store(data / "pannuke"), "vit_s")
    [plan] = plan_features_clean(data, "vit_s")
    assert plan.path == tag and plan.kind == "features" and not plan.kept
    execute([plan], [data])
    assert not tag.exists() and (data / "pannuke" / "fold1" / "images.npy").exists()
    _feature_tag(_store(data / "a"), "dup")
    _feature_tag(_store(data / "b"), "dup")
    with pytest.raises(UsageError, match="in several stores"):
        plan_features_clean(data, "dup")


def test_feature_tag_being_extracted_is_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tag = _feature_tag(_store(data / "pannuke"), "vit_s")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tag / "lock").write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
        [plan] = plan_features_clean(data, "vit_s")
        assert not plan.removes and "live cellbench process (lock)" in plan.skipped
        [whole] = plan_cache_clean(data)  # the nuclei store holding it is skipped too
        assert not whole.removes
    finally:
        child.kill()
        child.wait()
    # the lock of a dead extraction is a leftover: the tag goes whole
    [plan] = plan_features_clean(data, "vit_s")
    execute([plan], [data])
    assert not tag.exists()


def test_crash_in_a_kept_store_leaves_its_manifest_and_the_next_clean_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    store = _store(data / "store")
    (store / "fold1" / "labels.csv").write_text("mine")  # fold1 is kept: removed file by file
    real_unlink, calls = Path.unlink, []

    def crash_on_second(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) between two removals
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_cache_clean(data), [data])
    monkeypatch.undo()
    # manifests go last: the interrupted store still says which of its files remain ...
    assert (store / "fold1" / "manifest.json").exists() and (store / "manifest.json").exists()
    assert calls[0] != "manifest.json"
    # ... so the next clean takes the rest, and the user's file is still there
    execute(plan_cache_clean(data), [data])
    assert sorted(p.name for p in store.rglob("*")) == ["fold1", "labels.csv"]


@pytest.mark.parametrize("where", ["outside", "in the runs folder"])
def test_a_folder_named_like_a_run_without_cellbench_files_is_refused(tmp_path, where):
    """``2024-taxes`` or a ``runs/0007-photos`` made by hand matches the run folder pattern, but
    holds no config.yaml or events.jsonl of cellbench: nothing in it is removed (exit 3)."""
    from typer.testing import CliRunner

    from cellbench.cli.app import app

    runs = tmp_path / "runs"
    RunStore(runs).create("seed")
    folder = (tmp_path / "stuff" if where == "outside" else runs) / "0007-photos"
    photo = _write(folder / "holiday.jpg", 10)
    weights = _write(folder / "model.pt", 10)
    ref = str(folder) if where == "outside" else "photos"
    with pytest.raises(BadInputError, match="not a cellbench run"):
        plan_run_clean(RunStore(runs).resolve(ref), ALL_RUN_KINDS)
    for extra in ([], ["--all"]):
        result = CliRunner().invoke(
            app, ["clean", "--run", ref, *extra, "--yes", "--runs-dir", str(runs)]
        )
        assert result.exit_code == 3, result.output
        assert "not a cellbench run" in result.stderr
    assert photo.exists() and weights.exists()
