"""Reading history.csv: bad rows are skipped and counted, good rows kept."""

from __future__ import annotations

from cellbench.engine.history import History
from cellbench.runs.history import read_history, read_history_log


def _write(tmp_path, extra: bytes = b""):
    path = tmp_path / "history.csv"
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5, "lr": 0.1} for e in (1, 2)]
    History(path, rows).write()
    with open(path, "ab") as fh:
        fh.write(extra)
    return path


def test_a_clean_history_reads_whole(tmp_path):
    log = read_history_log(_write(tmp_path))
    assert [r["epoch"] for r in log.rows] == [1, 2] and log.damage() is None


def test_non_numeric_binary_and_wrong_width_rows_are_skipped_and_counted(tmp_path):
    path = _write(
        tmp_path,
        b'3,abc,0.5,0.1\n\x00\xff\xfe,1,2,3\n4,0.1\n"5,0.1,0.2,0.3\n6,1e400,0.5,0.1\n7,0.2,0.4,0.1\n',
    )
    log = read_history_log(path)
    assert [r["epoch"] for r in log.rows] == [1, 2, 7]  # the rows after the bad ones still count
    assert len(log.bad) == 5
    assert (
        log.damage() == "history.csv: 5 bad rows skipped (line 4: train_loss: not a number: 'abc')"
    )
    assert read_history(path) == log.rows


def test_a_header_without_epoch_or_a_missing_file(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert read_history_log(path).damage().startswith("history.csv: 1 bad row skipped (line 1")
    assert read_history_log(tmp_path / "none.csv").rows == []
    (tmp_path / "dir.csv").mkdir()
    assert (
        read_history_log(tmp_path / "dir.csv").damage()
        == "history.csv: cannot read (Is a directory)"
    )
