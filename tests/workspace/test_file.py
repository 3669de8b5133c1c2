"""cellbench.workspace.file: finding cellbench.yaml like git, reading it with one-line errors,
editing it under a lock with the user's comments kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from cellbench.errors import BadInputError, UsageError
from cellbench.runs.store import default_runs_root
from cellbench.sweep.store import default_sweeps_root
from cellbench.workspace.file import (
    WORKSPACE_FILE,
    check_key,
    current,
    edit,
    find_workspace_file,
    read_workspace,
    render_template,
)

REPO = Path(__file__).resolve().parents[2]


def make(folder: Path, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WORKSPACE_FILE
    path.write_text(text if text is not None else render_template())
    return path


def test_found_from_a_subfolder_and_its_folders_are_relative_to_the_file(
    workspaces_on, monkeypatch
):
    ws_file = make(workspaces_on / "ws")
    deep = workspaces_on / "ws" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_workspace_file() == ws_file.resolve()
    ws = current()
    assert ws.folder("runs") == (workspaces_on / "ws" / "runs").resolve()
    # every command's runs and sweeps root follow it
    assert default_runs_root() == (workspaces_on / "ws" / "runs").resolve()
    assert default_sweeps_root(default_runs_root()) == (workspaces_on / "ws" / "sweeps").resolve()
    # at the workspace root the folders read as today's (./runs)
    monkeypatch.chdir(workspaces_on / "ws")
    assert default_runs_root() == Path("runs")


def test_the_nearest_workspace_wins_and_the_ceiling_is_never_entered(workspaces_on, monkeypatch):
    outer = make(workspaces_on / "outer")
    inner = make(workspaces_on / "outer" / "inner")
    (workspaces_on / "outer" / "inner" / "x").mkdir()
    assert find_workspace_file(workspaces_on / "outer" / "inner" / "x") == inner.resolve()
    assert find_workspace_file(workspaces_on / "outer") == outer.resolve()
    # a ceiling at outer/: walking up from below it stops before it (git's semantics)...
    monkeypatch.setenv("CELLBENCH_CEILING_DIRECTORIES", str(workspaces_on / "outer"))
    (workspaces_on / "outer" / "other").mkdir()
    assert find_workspace_file(workspaces_on / "outer" / "other") is None
    # ...but the current folder itself is always looked at
    assert find_workspace_file(workspaces_on / "outer") == outer.resolve()


def test_home_is_the_default_ceiling(tmp_path, monkeypatch):
    monkeypatch.delenv("CELLBENCH_WORKSPACE", raising=False)
    monkeypatch.delenv("CELLBENCH_CEILING_DIRECTORIES", raising=False)
    home = tmp_path / "home"
    make(home)  # a stray ~/cellbench.yaml
    (home / "project").mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert find_workspace_file(home / "project") is None
    assert find_workspace_file(home) == (home / WORKSPACE_FILE).resolve()


def test_without_a_workspace_todays_defaults_and_env_vars_stay(workspaces_on, monkeypatch):
    monkeypatch.chdir(workspaces_on)
    assert current() is None
    assert default_runs_root() == Path("runs")
    monkeypatch.setenv("CELLBENCH_RUNS_DIR", "/elsewhere/runs")
    assert default_runs_root() == Path("/elsewhere/runs")
    # the env var beats a workspace too
    make(workspaces_on)
    assert default_runs_root() == Path("/elsewhere/runs")
    monkeypatch.setenv("CELLBENCH_WORKSPACE", "none")
    monkeypatch.delenv("CELLBENCH_RUNS_DIR")
    assert current() is None


def test_the_workspace_env_var_names_one_without_searching(workspaces_on, monkeypatch):
    ws_file = make(workspaces_on / "ws")
    monkeypatch.chdir(workspaces_on)
    monkeypatch.setenv("CELLBENCH_WORKSPACE", str(workspaces_on / "ws"))
    assert current().file == ws_file.absolute()
    monkeypatch.setenv("CELLBENCH_WORKSPACE", str(workspaces_on / "nope"))
    with pytest.raises(BadInputError, match="nope/cellbench.yaml: no workspace file there"):
        current()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ndefaults:\n  feature: x\n", "unknown key 'defaults.feature' (did you mean"),
        ("version: 1\npaths:\n  runs: 3\n", "paths.runs must be a folder path"),
        ("version: 1\npaths: [a]\n", "paths must be a mapping"),
        ("version: 7\n", "version 7 is not one this cellbench reads"),
        ("version: 1\nversion: 1\n", "duplicate key 'version'"),
        ("- a\n", "expected a mapping"),
        ("version: 1\npathz: {}\n", "unknown key 'pathz' (did you mean 'paths"),
        ('version: 1\npaths:\n  runs: "r\\0bad"\n', "paths.runs holds a NUL character"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(workspaces_on, text, message):
    path = make(workspaces_on, text)
    with pytest.raises(BadInputError) as info:
        read_workspace(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_edit_keeps_comments_validates_and_records_only_when_empty(workspaces_on):
    path = make(workspaces_on)
    assert edit(path, "defaults.sweep", "demo_phases")
    text = path.read_text()
    assert "# what a bare `cellbench sweep` runs" in text  # the template's comments survive
    assert yaml.safe_load(text)["defaults"]["sweep"] == "demo_phases"
    assert not edit(path, "defaults.sweep", "other", only_if_empty=True)
    assert yaml.safe_load(path.read_text())["defaults"]["sweep"] == "demo_phases"
    with pytest.raises(BadInputError, match="paths.runs must be a folder path"):
        edit(path, "paths.runs", None)
    assert yaml.safe_load(path.read_text())["paths"]["runs"] == "runs"  # nothing half-written


def test_concurrent_edits_all_land(workspaces_on):
    path = make(workspaces_on)
    keys = ["defaults.data", "defaults.features", "defaults.sweep", "defaults.profiles.organ"]
    threads = [threading.Thread(target=edit, args=(path, k, f"v{i}")) for i, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = read_workspace(path)
    assert [values[k] for k in keys] == ["v0", "v1", "v2", "v3"]


def test_keys_are_checked_with_a_did_you_mean():
    assert check_key("defaults.features") == "defaults.features"
    with pytest.raises(UsageError, match="did you mean 'defaults.features'"):
        check_key("defaults.featrues")


def test_the_checkout_is_a_workspace_with_todays_layout():
    values = read_workspace(REPO / WORKSPACE_FILE)
    assert {k: v for k, v in values.items() if k.startswith("paths.")} == {
        "paths.data": "data",
        "paths.runs": "runs",
        "paths.sweeps": "sweeps",
        "paths.workflows": "workflows",
        "paths.profiles": "profiles",
    }
    # its profiles folder is the shipped one
    assert (REPO / "profiles").resolve() == (REPO / "cellbench" / "profiles").resolve()
