"""cellbench.outputs: the ledger decides what may be replaced; stores and runs are off limits."""

from __future__ import annotations

import json

import pytest

from cellbench import outputs
from cellbench.errors import RunConflict


def test_written_then_replaced_edited_then_refused(tmp_path):
    target = tmp_path / "scores.csv"
    outputs.write_text(target, "a,b\n1,2\n", option="--csv")
    assert outputs.written_by_cellbench(target)
    outputs.write_text(target, "a,b\n3,4\n", option="--csv")  # its own, unchanged: replaced
    target.write_text("a,b\n3,4\n# my note\n")
    with pytest.raises(RunConflict, match="changed since"):
        outputs.check(target, option="--csv")
    outputs.write_text(target, "a,b\n5,6\n", overwrite=True, option="--csv")
    ledger = json.loads((tmp_path / outputs.LEDGER).read_text())
    assert list(ledger["files"]) == ["scores.csv"]


def test_symlinks_folders_and_a_foreign_ledger_are_refused(tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(mine)
    (tmp_path / "folder.png").mkdir()
    for name in ("link.png", "folder.png"):
        with pytest.raises(RunConflict, match="replaces only plain files"):
            outputs.check(tmp_path / name, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / outputs.LEDGER).write_text("[]")  # a file of that name that is not ours
    (other / "f.csv").write_text("x")
    with pytest.raises(RunConflict, match="not a cellbench output ledger"):
        outputs.check(other / "f.csv")


def test_a_run_root_and_its_checkpoints_are_off_limits_but_predict_is_not(tmp_path):
    run = tmp_path / "runs" / "0001-a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "events.jsonl").write_text("")
    for path in (run / "metrics.json", run / "checkpoints" / "x.png", run / "eval" / "a.csv"):
        with pytest.raises(RunConflict, match="own files"):
            outputs.check(path, overwrite=True)
    outputs.check(run / "predict" / "tile.geojson")
