"""The in-memory state.json shared by a sweep's and a workflow's threads."""

from __future__ import annotations

import json
import threading

import pytest

from cellbench.errors import BadInputError
from cellbench.json_state import JsonState, read_json


def test_defaults_fill_what_the_file_lacks_and_keep_what_it_has(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"status": "running", "phases": {"a": {"status": "done"}}}))
    state = JsonState(path, {"status": "created", "phases": {}, "name": "x"})
    assert state.data["status"] == "running" and state.data["name"] == "x"
    assert state.entry("phases", "a") == {"status": "done"}
    assert state.entry("phases", "b") == {"status": "pending"}


def test_an_entry_is_a_copy_and_every_change_is_saved(tmp_path):
    path = tmp_path / "state.json"
    state = JsonState(path, {"trials": {}})
    state.update_entry("trials", "t1", status="running", epoch=1)
    copy = state.entry("trials", "t1")
    copy["status"] = "changed by the caller"
    assert state.entry("trials", "t1")["status"] == "running"
    state.set(status="finished")
    on_disk = json.loads(path.read_text())
    assert on_disk["trials"] == {"t1": {"status": "running", "epoch": 1}}
    assert on_disk["status"] == "finished" and "updated" in on_disk
    assert JsonState(path, {}).data["trials"]["t1"]["epoch"] == 1  # read back


def test_threads_lose_no_update(tmp_path):
    path = tmp_path / "state.json"
    state = JsonState(path, {"trials": {}})

    def work(k: int) -> None:
        for epoch in range(20):
            state.update_entry("trials", f"t{k}", epoch=epoch)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_disk = json.loads(path.read_text())
    assert {k: v["epoch"] for k, v in on_disk["trials"].items()} == {f"t{k}": 19 for k in range(4)}


def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(BadInputError, match=r"state\.json: unreadable sweep file"):
        JsonState(path, {}, "sweep file")
    assert read_json(tmp_path / "absent.json", []) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", "not a JSON object"),
        ('{"trials": []}', "'trials' is not an object"),
        ('{"trials": null}', "'trials' is not an object"),
    ],
)
def test_a_state_of_the_wrong_shape_is_one_line_naming_it(tmp_path, text, problem):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(BadInputError) as info:
        JsonState(path, {"trials": {}}, "sweep file")
    assert str(info.value) == f"{path}: damaged sweep file ({problem})"


def test_an_entry_that_is_not_an_object_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"trials": {"t1": "x", "t2": None}}))
    state = JsonState(path, {"trials": {}})
    with pytest.raises(BadInputError, match=r"state\.json: damaged state file \('trials\.t1'"):
        state.entry("trials", "t1")
    with pytest.raises(BadInputError, match=r"'trials\.t1' is not an object"):
        state.update_entry("trials", "t1", status="running")
    state.update_entry("trials", "t2", status="running")  # null: as if absent
    assert json.loads(path.read_text())["trials"] == {"t1": "x", "t2": {"status": "running"}}
