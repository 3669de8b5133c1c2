"""Run ids, creation and resolution by id / name / folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cellbench.errors import BadInputError, RunConflict, UsageError
from cellbench.runs.store import RunStore


def test_sequential_ids_and_folder_names(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = store.create("baseline")
    b = store.create("digestive")
    assert (a.id, a.name, a.root.name) == (1, "baseline", "0001-baseline")
    assert (b.id, b.root.name) == (2, "0002-digestive")
    assert [r.id for r in store.runs()] == [1, 2]


def test_resolve_by_id_name_and_folder(tmp_path):
    store = RunStore(tmp_path)
    store.create("baseline")
    run = store.create("digestive")
    for ref in ("2", 2, "digestive", "0002-digestive", str(run.root), f"{run.root}/"):
        assert store.resolve(ref) == run


def test_missing_run_is_bad_input_with_hint(tmp_path):
    store = RunStore(tmp_path)
    store.create("digestive")
    with pytest.raises(BadInputError, match="no run 'digestiv' \\(did you mean 'digestive'\\?\\)"):
        store.resolve("digestiv")
    with pytest.raises(BadInputError):
        store.resolve("7")


def test_names_are_unique_and_checked(tmp_path):
    store = RunStore(tmp_path)
    store.create("a")
    with pytest.raises(RunConflict):
        store.create("a")
    for bad in ("12", "-x", "a b", "../up"):
        with pytest.raises(UsageError):
            store.create(bad)


def test_env_var_sets_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBENCH_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"


def test_two_processes_creating_runs_at_once_get_unique_ids(tmp_path):
    # Each process creates 15 runs as fast as it can; with a racy allocator two of them would
    # pick the same id (and different names, so both mkdirs would succeed).
    script = textwrap.dedent(
        """
        import sys
        from cellbench.runs.store import RunStore
        store = RunStore(sys.argv[1])
        for i in range(15):
            store.create(f"{sys.argv[2]}{i}")
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), prefix])
        for prefix in ("a", "b")
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    ids = [r.id for r in RunStore(tmp_path).runs()]
    assert sorted(ids) == list(range(1, 31))


def test_default_names_picked_at_once_by_several_processes_never_collide(tmp_path):
    # Sweep trials and parallel `train` commands without --run all ask for the same default
    # name: it is made unique (-2, -3...) under the id lock, so none dies with "run exists".
    script = textwrap.dedent(
        """
        import sys
        from cellbench.engine.session import TrainRequest, create_run
        from cellbench.runs.store import RunStore
        store = RunStore(sys.argv[1])
        for _ in range(8):
            create_run(store, TrainRequest(), "simple_cnn-classify")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    names = [r.name for r in RunStore(tmp_path).runs()]
    assert len(names) == len(set(names)) == 32
    assert "simple_cnn-classify" in names and "simple_cnn-classify-32" in names


def test_unique_create_keeps_a_chosen_name_strict(tmp_path):
    store = RunStore(tmp_path)
    store.create("shapes")
    assert store.create("shapes", unique=True).name == "shapes-2"
    with pytest.raises(RunConflict):
        store.create("shapes")


def _two_stores(tmp_path):
    """Two runs folders that both hold a ``0001-exp``."""
    here, other = RunStore(tmp_path / "here" / "runs"), RunStore(tmp_path / "other" / "runs")
    return here, here.create("exp"), other, other.create("exp")


def test_a_path_names_that_folder_wherever_it_lies(tmp_path, monkeypatch):
    here, mine, other, theirs = _two_stores(tmp_path)
    monkeypatch.chdir(tmp_path / "here")
    for ref in (
        str(theirs.root),
        f"{theirs.root}/",
        "../other/runs/0001-exp",
        str(tmp_path / "here" / ".." / "other" / "runs" / "0001-exp"),
        theirs.root,  # a Path object
    ):
        assert here.resolve(ref).root.resolve() == theirs.root.resolve(), ref
    # the same folder name without a path is this store's run
    assert here.resolve("0001-exp") == mine
    # a path into this store is this store's run, the same RunPaths as by id
    assert here.resolve("./runs/0001-exp") == here.resolve(1) == mine


def test_a_symlink_to_a_run_folder_resolves_to_the_real_folder(tmp_path):
    here, mine, other, theirs = _two_stores(tmp_path)
    link = tmp_path / "shortcut"
    link.symlink_to(theirs.root, target_is_directory=True)
    assert here.resolve(str(link)).root == theirs.root.resolve()


def test_anything_else_is_refused_with_a_did_you_mean(tmp_path, monkeypatch):
    here, mine, other, theirs = _two_stores(tmp_path)
    monkeypatch.chdir(tmp_path / "other")
    cases = {
        str(tmp_path / "other" / "runs" / "0001-exq"): "no such folder (did you mean '0001-exp'?)",
        str(theirs.root / ".."): "not a run folder",
        str(tmp_path / "nowhere"): "no such folder",
        "0002-exp": "no run '0002-exp' (did you mean '0001-exp'?)",
        "ex": "no run 'ex'",
    }
    for ref, message in cases.items():
        with pytest.raises(BadInputError) as err:
            here.resolve(ref)
        assert message in str(err.value), ref
        assert here.find(ref) is None
    # a bare folder name is looked up in the store, never in the current directory
    monkeypatch.chdir(tmp_path / "other" / "runs")
    here_runs = RunStore(tmp_path / "empty")
    with pytest.raises(BadInputError, match="no run '0001-exp'"):
        here_runs.resolve("0001-exp")


def test_names_are_matched_whole_a_trailing_newline_is_refused(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(UsageError, match=r"run name 'nl\\n'"):  # one line: the name as repr
        store.create("nl\n")
    (tmp_path / "0001-ok\n").mkdir()  # a folder `$` would have taken for a run
    (tmp_path / "0002-ok").mkdir()
    assert [r.root.name for r in store.runs()] == ["0002-ok"]


def test_a_runs_folder_that_is_a_file_is_refused_at_once(tmp_path):
    from typer.testing import CliRunner

    from cellbench.cli.app import app

    afile = tmp_path / "rdfile"
    afile.write_text("not a folder")
    with pytest.raises(BadInputError, match="the runs folder is a file"):
        RunStore(afile)
    args = ["sweep", "--profile", "demo", "--grid", "train.lr=0.1,0.2", "--set"]
    args += [f"data.path={tmp_path}", "--runs-dir", str(afile)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3 and "the runs folder is a file" in result.stderr
    assert not (tmp_path / "sweeps").exists() and afile.read_text() == "not a folder"
