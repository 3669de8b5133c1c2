"""Atomic writes: a failed write names the destination; temp files of killed writers are found."""

from __future__ import annotations

import errno

import pytest

from cellbench.atomic import atomic_write, atomic_write_text, remove_stale_temps


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def full_disk(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises, no name

    with pytest.raises(OSError) as caught:
        atomic_write(path, full_disk)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp left


def test_a_failed_rename_names_the_destination_not_the_temp_file(tmp_path):
    blocked = tmp_path / "best.pt"
    blocked.mkdir()
    (blocked / "x").write_text("x")
    with pytest.raises(OSError) as caught:
        atomic_write_text(blocked, "data")
    assert caught.value.filename == str(blocked)


def test_remove_stale_temps_removes_only_cellbench_temp_names(tmp_path):
    ours = [tmp_path / ".last.pt.k3j_a9x2.tmp", tmp_path / ".history.csv.0a1b2c3d.tmp"]
    theirs = [tmp_path / "notes.tmp", tmp_path / ".last.pt.short.tmp", tmp_path / "last.pt"]
    for p in ours + theirs:
        p.write_text("x")
    (tmp_path / ".folder.abcdefgh.tmp").mkdir()  # a folder is never ours
    assert sorted(remove_stale_temps(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and (tmp_path / ".folder.abcdefgh.tmp").is_dir()
    assert remove_stale_temps(tmp_path / "missing") == []
