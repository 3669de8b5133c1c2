"""events.jsonl: one object per line, torn-line tolerance, following a growing file."""

from __future__ import annotations

import json
import threading
import time

from cellbench.runs.events import EventWriter, follow_events, read_events


def test_writer_flushes_each_line(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("run_start", task="classify")
    # readable by another reader before close: flushed per line
    assert [e["kind"] for e in read_events(path)] == ["run_start"]
    writer.emit("epoch", epoch=1, train_loss=float("nan"))
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert read_events(path)[1]["train_loss"] == "nan"  # strict JSON, never a bare NaN


def test_reader_skips_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.emit("run_start")
        w.emit("epoch", epoch=1)
    with open(path, "a") as fh:
        fh.write('{"kind": "epoch", "epo')  # a writer killed mid-line
    assert [e["kind"] for e in read_events(path)] == ["run_start", "epoch"]
    assert read_events(path, kind="epoch") == [read_events(path)[1]]


def test_new_writer_after_torn_line_keeps_next_events_whole(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "run_start"}\n{"kind": "ep')
    with EventWriter(path) as w:
        w.emit("run_end", status="completed")
    assert [e["kind"] for e in read_events(path)] == ["run_start", "run_end"]


def test_missing_file_reads_empty(tmp_path):
    assert read_events(tmp_path / "nope.jsonl") == []


def test_follow_yields_appended_events_and_joins_split_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    done = threading.Event()
    seen = []

    def reader():
        for event in follow_events(path, stop=done.is_set, poll=0.01):
            seen.append(event)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.05)  # the file does not exist yet: follow waits for it
    with open(path, "a") as fh:
        fh.write('{"kind": "run_start"}\n{"kind": "st')
        fh.flush()
        time.sleep(0.05)
        fh.write('ep", "step": 1}\n')
        fh.flush()
    time.sleep(0.1)
    done.set()
    thread.join(timeout=5)
    assert [e["kind"] for e in seen] == ["run_start", "step"]
    assert seen[1]["step"] == 1
