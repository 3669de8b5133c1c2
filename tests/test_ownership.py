"""Which files of a store cellbench wrote: manifests' ``"files"``, hostile entries, old stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellbench.ownership import (
    files_entry,
    is_store_folder,
    owned_files,
    read_manifest,
    survey,
    written_files,
)

MANIFEST = {"format": "cellbench-nuclei-store", "cellbench_version": "0.1.0"}


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _manifest(folder: Path, files: list | None = None, **extra) -> Path:
    data = {**MANIFEST, **extra}
    if files is not None:
        data["files"] = files
    return _write(folder / "manifest.json", json.dumps(data))


def test_files_entry_is_sorted_relative_and_never_outside(tmp_path: Path) -> None:
    assert files_entry(tmp_path, [tmp_path / "b.npy", "a/x.npy", tmp_path / "manifest.json"]) == [
        "a/x.npy",
        "b.npy",
    ]
    with pytest.raises(ValueError):
        files_entry(tmp_path / "store", [tmp_path / "elsewhere.npy"])


def test_written_files_lists_a_staging_folder(tmp_path: Path) -> None:
    for name in ("images.npy", "sub/hv.npy", "manifest.json", ".tissues.json.abcd1234.tmp"):
        _write(tmp_path / name)
    # the manifest itself and torn temp files of atomic writes are not listed
    assert written_files(tmp_path) == ["images.npy", "sub/hv.npy"]


def test_listed_files_are_owned_and_nothing_else(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _manifest(store / "fold1", ["images.npy"])
    _manifest(store, [])
    owned = owned_files(store)
    assert owned == {
        store / "manifest.json",
        store / "fold1" / "manifest.json",
        store / "fold1" / "images.npy",
    }


@pytest.mark.parametrize(
    "entry",
    ["../../secret.txt", "/ABS", "fold1/../../secret.txt", "", ".", "a//b", 7, None, "a\\..\\b"],
)
def test_hostile_entries_are_ignored(tmp_path: Path, entry) -> None:
    secret = _write(tmp_path / "secret.txt", "keep")
    store = tmp_path / "data" / "store"
    entry = str(secret) if entry == "/ABS" else entry
    _manifest(store, [entry, "ok.npy"])
    owned = owned_files(store)
    assert owned == {store / "manifest.json", store / "ok.npy"}
    assert secret not in owned and secret.read_text() == "keep"


def test_entry_through_a_symlinked_folder_is_ignored(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside / "precious.npy")
    store = tmp_path / "store"
    _manifest(store, ["link/precious.npy", "own.npy"])
    (store / "link").symlink_to(outside, target_is_directory=True)
    assert owned_files(store) == {store / "manifest.json", store / "own.npy"}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "not written by cellbench"),
        ('{"name": "PanNuke"}', "not written by cellbench"),
        (b"\xff\xfe", "unreadable"),
    ],
)
def test_a_manifest_that_is_not_cellbench_json_owns_nothing(tmp_path, content, why) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    manifest, reason = read_manifest(path)
    assert manifest is None and why in reason
    assert owned_files(tmp_path) is None and not is_store_folder(tmp_path)


def test_store_written_before_files_owns_the_contract_files_only(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _manifest(store)  # no "files": an old store
    for name in ("images.npy", "inst.npy", "types.npy", "hv.npy", "tissues.json", "notes.txt"):
        _write(store / "fold1" / name)
    _manifest(store / "fold1")
    owned = owned_files(store)
    assert {p.name for p in owned if p.parent.name == "fold1"} == {
        "images.npy",
        "inst.npy",
        "types.npy",
        "hv.npy",
        "tissues.json",
        "manifest.json",
    }
    assert store / "fold1" / "notes.txt" not in owned


def test_old_feature_store_owns_the_feature_contract(tmp_path: Path) -> None:
    store = tmp_path / "vit_s"
    _manifest(store)
    for name in ("cls.npy", "tokens.npy", "tissues.json", "images.npy"):
        _write(store / "fold2" / name)
    owned = owned_files(store, kind="features")
    assert {p.name for p in owned if p.parent.name == "fold2"} == {
        "cls.npy",
        "tokens.npy",
        "tissues.json",
        "manifest.json",
    }


def test_survey_sorts_owned_foreign_and_leftovers(tmp_path: Path) -> None:
    store = tmp_path / "proj"
    _manifest(store, [])
    _write(store / "fold1" / "images.npy")
    _manifest(store / "fold1", ["images.npy"])
    _write(store / "raw" / "Fold 1" / "images.npy")  # the user's raw data, in the store folder
    _write(store / "fold1" / "notes.txt")
    _write(store / ".fold2.tmp-999999999" / "images.npy")  # staging of a dead prepare
    (store / "empty").mkdir()
    found = survey(store, owned_files(store))
    rel = lambda paths: sorted(str(p.relative_to(store)) for p in paths)  # noqa: E731
    assert rel(found.owned) == [
        ".fold2.tmp-999999999",
        "fold1/images.npy",
        "fold1/manifest.json",
        "manifest.json",
    ]
    # a folder holding nothing of ours is one entry, however much is inside
    assert rel(found.foreign) == ["empty", "fold1/notes.txt", "raw"]
    assert not found.fully_owned


def test_staging_folder_of_a_live_process_is_busy(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store = tmp_path / "store"
        _manifest(store, [])
        (store / f".fold1.tmp-{child.pid}").mkdir()
        found = survey(store, owned_files(store))
        assert [p.name for p in found.busy] == [f".fold1.tmp-{child.pid}"]
    finally:
        child.kill()
        child.wait()


def test_symlinks_are_entries_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside / "big.npy", "x" * 1000)
    store = tmp_path / "store"
    _manifest(store, ["images.npy"])
    os.symlink(outside / "big.npy", store / "images.npy")  # listed, but a link: goes as a link
    os.symlink(outside, store / "more")  # not listed: foreign, not walked into
    found = survey(store, owned_files(store))
    assert store / "images.npy" in found.owned
    assert found.foreign == [store / "more"]
    assert found.bytes < 1000  # the link counts as itself
