"""events.jsonl: one object per line, torn-line tolerance, following a growing file."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cellbench.runs.events import (
    EventTail,
    EventWriter,
    follow_events,
    read_event_log,
    read_events,
)


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
    assert [e["kind"] for e in read_events(path)] == ["run_start", "warning", "run_end"]
    # the repaired fragment is said in a torn_line warning, so the run is not "damaged"
    warning = read_events(path, kind="warning")[0]
    assert (warning["check"], warning["line"]) == ("torn_line", 2)
    assert read_event_log(path).damage() is None


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


def line(kind: str, **fields) -> bytes:
    return (json.dumps({"kind": kind, "time": 1.0, **fields}) + "\n").encode()


def test_tail_reads_only_what_was_appended(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == ([], False)  # no file yet
    path.write_bytes(line("step", step=1))
    events, reset = tail.read()
    assert [e["step"] for e in events] == [1] and not reset
    assert tail.read() == ([], False)
    with open(path, "ab") as fh:
        fh.write(line("step", step=2) + line("step", step=3))
    assert [e["step"] for e in tail.read()[0]] == [2, 3]


def test_a_line_written_in_two_parts_is_read_once_whole(tmp_path):
    path = tmp_path / "events.jsonl"
    whole = line("epoch", epoch=1, train_loss=0.5)
    path.write_bytes(whole[:17])
    tail = EventTail(path)
    assert tail.read() == ([], False)  # the half line waits for its newline
    with open(path, "ab") as fh:
        fh.write(whole[17:])
    events, _ = tail.read()
    assert events == [json.loads(whole)]


def test_a_torn_line_of_a_killed_writer_is_skipped_and_later_lines_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(line("step", step=1) + b'{"kind": "step", "st')  # writer died mid-line
    watcher_tail = EventTail(path)
    assert [e["step"] for e in watcher_tail.read()[0]] == [1]
    with EventWriter(path) as writer:  # a resumed writer starts on a fresh line
        writer.emit("step", epoch=1, step=2, loss=0.5)
    new = watcher_tail.read()[0]
    assert [e["step"] for e in new if e["kind"] == "step"] == [2]
    assert watcher_tail.log.damage() is None  # excused by the writer's torn_line warning


@pytest.mark.parametrize("how", ["truncated", "replaced", "rewritten_longer", "removed"])
def test_a_replaced_or_truncated_file_is_read_again_from_the_start(tmp_path, how):
    path = tmp_path / "events.jsonl"
    path.write_bytes(line("step", step=1) + line("step", step=2))
    tail = EventTail(path)
    assert len(tail.read()[0]) == 2
    if how == "truncated":
        path.write_bytes(line("run_start", model="b"))
    elif how == "replaced":  # a new file renamed over the old one: another inode
        other = tmp_path / "new.jsonl"
        other.write_bytes(line("run_start", model="b") + line("step", step=9) * 3)
        other.replace(path)
    elif how == "rewritten_longer":  # same inode, longer than before: only the head tells
        path.write_bytes(line("run_start", model="b", time=2.0) + line("step", step=9) * 3)
    else:
        path.unlink()
    events, reset = tail.read()
    assert reset
    if how == "removed":
        assert events == []
    else:
        assert events[0]["kind"] == "run_start" and events[0]["model"] == "b"


def test_an_unreadable_events_file_is_damage_not_a_crash(tmp_path):
    path = tmp_path / "events.jsonl"
    path.mkdir()  # a folder where the stream should be
    assert read_event_log(path).damage() == "events.jsonl: cannot read (Is a directory)"
    tail = EventTail(path)
    assert tail.read() == ([], False) and tail.read() == ([], False)
    assert tail.log.damage() == "events.jsonl: cannot read (Is a directory)"
