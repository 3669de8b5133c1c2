"""The main views pinned as SVG snapshots (pytest-textual-snapshot) at 80x24 and 160x48.

The run folders are fixed (``screens.write_gallery``: fixed timestamps, no pid), the runs folder
is ``./runs`` of a temporary working folder, the clock shown in the warnings is UTC: the screens
are the same on every machine. After an intended change of a view, review and accept with
``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time

import pytest

from cellbench.tui.app import CellbenchTUI

from .screens import write_gallery

pytest.importorskip("pytest_textual_snapshot")

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture
def gallery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    write_gallery(tmp_path / "runs")
    yield tmp_path / "runs"
    monkeypatch.undo()
    time.tzset()


async def read_all(pilot) -> None:
    while pilot.app.polling:
        await pilot.pause(0.02)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_runs_view(snap_compare, gallery, size):
    app = CellbenchTUI(gallery, interval=3600)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=read_all)


@pytest.mark.parametrize("size", SIZES)
def test_metric_curve_view(snap_compare, gallery, size):
    app = CellbenchTUI(gallery, run="baseline", interval=3600)
    assert snap_compare(app, press=["]", "l"], terminal_size=SIZES[size], run_before=read_all)


@pytest.mark.parametrize("size", SIZES)
def test_compare_view(snap_compare, gallery, size):
    app = CellbenchTUI(gallery, interval=3600)
    keys = ["space", "k", "k", "space", "c"]
    assert snap_compare(app, press=keys, terminal_size=SIZES[size], run_before=read_all)


def test_help_view(snap_compare, gallery):
    app = CellbenchTUI(gallery, interval=3600)
    assert snap_compare(app, press=["?"], terminal_size=(80, 24), run_before=read_all)


@pytest.mark.parametrize("size", SIZES)
def test_sweep_view(snap_compare, gallery, size):
    app = CellbenchTUI(gallery, sweep="lr-grid", interval=3600)
    assert snap_compare(app, press=["_"], terminal_size=SIZES[size], run_before=read_all)
