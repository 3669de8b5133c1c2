"""``cellbench sweep`` on the command line: exit codes, conflicts, show, clean --sweep."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.lock import RunLock
from cellbench.sweep.store import SweepFolder

runner = CliRunner()


def _invoke(tmp_path, *args):
    return runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])


def test_usage_errors_exit_2_before_anything_runs(tmp_path):
    cases = [
        (["sweep", "--profile", "demo"], "--grid"),
        (["sweep", "--profile", "demo", "--grid", "train.lrr=1,2"], "did you mean 'train.lr'"),
        (["sweep", "--grid", "train.lr=1,2", "--backend", "slurm"], "use local or ray"),
        (["sweep", "--grid", "train.lr=1,2", "--asha"], "--backend ray"),
        (["sweep", "show"], "the sweep's name"),
    ]
    for args, message in cases:
        result = _invoke(tmp_path, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr
    assert not (tmp_path / "sweeps").exists()


def test_missing_ray_extra_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = _invoke(tmp_path, "sweep", "--grid", "train.lr=1,2", "--backend", "ray")
    assert result.exit_code == 2
    assert "pip install 'cellbench[ray]'" in result.stderr


def test_bad_sweep_file_exits_3(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("profile: demo\nspace: [1, 2]\n")
    result = _invoke(tmp_path, "sweep", str(bad))
    assert result.exit_code == 3 and str(bad) in result.stderr


def test_show_missing_sweep_exits_3(tmp_path):
    result = _invoke(tmp_path, "sweep", "show", "nope")
    assert result.exit_code == 3 and "no sweep 'nope'" in result.stderr


def test_a_running_sweep_or_another_study_under_the_name_exits_4(tmp_path):
    data = [f"data.path={tmp_path}"]  # the data must exist: a sweep checks it before any trial
    args = ["sweep", "--profile", "demo", "--set", data[0], "--grid", "train.lr=0.1,0.2"]
    args += ["--name", "s"]
    folder = SweepFolder(tmp_path / "sweeps" / "s")
    folder.root.mkdir(parents=True)
    with RunLock(folder.lock):  # another live process holds the sweep
        from cellbench.sweep.spec import from_command_line

        folder.write_spec(from_command_line("demo", data, ["train.lr=0.1,0.2"], None, None, "s")
                          .to_dict())  # fmt: skip
        result = _invoke(tmp_path, *args)
    assert result.exit_code == 4 and "writing this sweep" in result.stderr  # not "this run"
    other = _invoke(tmp_path, "sweep", "--profile", "demo", "--set", data[0], "--grid",
                    "train.lr=0.3", "--name", "s")  # fmt: skip
    assert other.exit_code == 4 and "exists with other settings" in other.stderr


def test_clean_sweep_removes_its_trials_checkpoints_only(tmp_path):
    from cellbench.runs.store import RunStore
    from cellbench.sweep.trials import make_trial

    store = RunStore(tmp_path / "runs")
    trials = [make_trial("s", i, "grid", {"train.lr": lr}, None, [], 1, "demo", False)
              for i, lr in enumerate((0.1, 0.2), start=1)]  # fmt: skip
    folder = SweepFolder(tmp_path / "sweeps" / "s")
    folder.root.mkdir(parents=True)
    folder.write_spec({"name": "s"})
    folder.write_trials(trials)
    for name in [t.name for t in trials] + ["not-in-the-sweep"]:
        run = store.create(name)
        run.checkpoints.mkdir()
        run.last_checkpoint.write_bytes(b"x" * 10)
        run.history.write_text("epoch\n1\n")
        run.config.write_text("task: classify\n")  # a training's first file
    result = _invoke(tmp_path, "clean", "--sweep", "s", "--yes", "--json")
    assert result.exit_code == 0, result.output
    removed = json.loads(result.stdout)["removed"]
    assert len(removed) == 2 and all("checkpoints" in r["path"] for r in removed)
    assert store.find("not-in-the-sweep").last_checkpoint.is_file()
    assert all(store.find(t.name).history.is_file() for t in trials)
    assert _invoke(tmp_path, "clean", "--sweep", "nope", "--yes").exit_code == 3


def test_corrupt_sweep_state_exits_3_naming_the_file(tmp_path):
    from cellbench.sweep.spec import from_command_line

    data = f"data.path={tmp_path}"
    spec = from_command_line("demo", [data], ["train.lr=0.1,0.2"], None, None, "s")
    folder = SweepFolder(tmp_path / "sweeps" / "s")
    folder.root.mkdir(parents=True)
    folder.write_spec(spec.to_dict())
    folder.state.write_text('{"status": "runn')  # torn by hand
    result = _invoke(tmp_path, "sweep", "--profile", "demo", "--set", data, "--grid",
                     "train.lr=0.1,0.2", "--name", "s")  # fmt: skip
    assert result.exit_code == 3 and str(folder.state) in result.stderr


def test_sweep_file_with_a_missing_profile_exits_3(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("profile: no_such_profile\nspace: {train.lr: [0.1]}\n")
    result = _invoke(tmp_path, "sweep", str(study))
    assert result.exit_code == 3 and "no_such_profile" in result.stderr


def test_a_sweep_whose_data_is_not_there_is_refused_before_any_trial(tmp_path, monkeypatch):
    """Every trial would fail on it and be recorded failed (a plain rerun then exits 1 until
    --retry-failed): the sweep refuses it once, naming the path and the folder it is relative
    to; from a sweep file, naming the file (exit 3)."""
    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--profile", "demo", "--grid", "train.lr=0.1,0.2", "--name", "nodata"]
    result = _invoke(tmp_path, *args, "--set", "data.path=data/nowhere")
    assert result.exit_code == 2 and "data.path data/nowhere: not found" in result.stderr
    assert str(tmp_path) in result.stderr
    study = tmp_path / "study.yaml"
    study.write_text("profile: demo\nset: {data.path: data/nowhere}\nspace: {train.lr: [0.1]}\n")
    result = _invoke(tmp_path, "sweep", str(study))
    assert result.exit_code == 3 and str(study.resolve()) in result.stderr
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    "body, message",
    [
        ("set: {train.lr: .nan}\nspace: {train.batch_size: [8]}\n", "train.lr"),
        ("space: {train.lr: [.nan]}\n", "train.lr"),
    ],
)
def test_a_bad_value_in_a_sweep_file_names_the_file(tmp_path, body, message):
    study = tmp_path / "study.yaml"
    study.write_text(f"profile: demo\n{body}")
    result = _invoke(tmp_path, "sweep", str(study), "--set", f"data.path={tmp_path}")
    assert result.exit_code == 3, result.output
    assert str(study.resolve()) in result.stderr or str(study) in result.stderr
    assert message in result.stderr and "\n" not in result.stderr.strip()


def test_an_unknown_profile_in_a_sweep_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("study.yaml").write_text("profile: nope_profile\nspace: {train.lr: [0.1]}\n")
    result = _invoke(tmp_path, "sweep", "study.yaml")
    assert result.exit_code == 3 and result.stderr.startswith("error: study.yaml: profile:")
