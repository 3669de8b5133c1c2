"""Staged folders: complete or absent, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellbench.data.staging import remove_stale, staged_dir
from cellbench.errors import UsageError


def test_success_replaces_and_failure_leaves_previous(tmp_path):
    final = tmp_path / "out"
    with staged_dir(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_staging_of_dead_process_is_removed(tmp_path):
    stale = tmp_path / ".out.tmp-999999999"
    stale.mkdir()
    remove_stale(tmp_path / "out")
    assert not stale.exists()


def test_refuses_root_home_cwd_and_their_parents(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for target in (Path("."), Path("~"), home, tmp_path, Path("/")):
        with pytest.raises(UsageError, match="refusing to replace"), staged_dir(target):
            pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["home", "work"]
    with staged_dir(Path("sub")) as tmp:  # below the cwd is fine
        (tmp / "a").write_text("1")
    assert (work / "sub" / "a").read_text() == "1"
