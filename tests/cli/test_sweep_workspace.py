"""A bare `cellbench sweep` in a workspace: the list of sweep files (the workspace's over the
shipped ones) and of its sweeps with the command to go on (exit 0), or the workspace's default
sweep run when one is set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()


@pytest.fixture
def ws(workspaces_on, monkeypatch):
    root = workspaces_on / "ws"
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    monkeypatch.chdir(root)
    made = runner.invoke(
        app, ["data", "synth", "--kind", "shapes", "--out", "data/shapes", "--tiles", "12"]
    )
    assert made.exit_code == 0, made.output
    (root / "profiles" / "sweeps").mkdir(parents=True)
    (root / "profiles" / "sweeps" / "tiny.yaml").write_text(
        "# one quick trial on the workspace's shapes\n"
        "name: tiny\nprofile: demo\n"
        f"set: {{data.path: {root / 'data' / 'shapes'}, train.batch_size: 16}}\n"
        "epochs: 1\nspace:\n  train.lr: [0.002]\n"
    )
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    return root


def test_bare_sweep_lists_then_runs_the_default_then_lists_it_with_its_command(ws):
    listed = runner.invoke(app, ["sweep", "--json"])
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    origins = {f["name"]: f["origin"] for f in report["files"]}
    assert origins["tiny"] == "workspace" and origins["demo_phases"] == "shipped"
    assert report["sweeps_dir"] == str((ws / "sweeps").resolve()) and report["sweeps"] == []

    assert runner.invoke(app, ["config", "set", "defaults.sweep", "tiny"]).exit_code == 0
    ran = runner.invoke(app, ["sweep"])
    assert ran.exit_code == 0, ran.output
    assert "sweep: tiny (workspace default)" in ran.stderr
    assert (ws / "sweeps" / "tiny" / "leaderboard.json").is_file()
    assert len(list((ws / "runs").iterdir())) >= 1  # its trial is a run of the workspace

    assert runner.invoke(app, ["config", "unset", "defaults.sweep"]).exit_code == 0
    again = runner.invoke(app, ["sweep"])
    assert again.exit_code == 0, again.output
    text = again.stdout.replace("\n", "")
    assert "tiny" in text and "completed" in text and "cellbench sweep show tiny" in text

    # an interrupted sweep: the command that resumes it
    state = ws / "sweeps" / "tiny" / "state.json"
    data = json.loads(state.read_text())
    data["status"] = "interrupted"
    state.write_text(json.dumps(data))
    entries = json.loads(runner.invoke(app, ["sweep", "--json"]).stdout)["sweeps"]
    assert [(e["name"], e["status"], e["command"]) for e in entries] == [
        ("tiny", "interrupted", "cellbench sweep tiny")
    ]


def test_a_sweep_file_needing_features_gets_the_workspaces_store(
    workspaces_on, monkeypatch, fx_store, tiny_vit, capsys
):
    """`cellbench sweep cellvit_families` names no store: its trials get the workspace's (here
    its only one, there being no default), as `train` would."""
    import shutil

    from cellbench.cli.sweep import _default_features
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone
    from cellbench.sweep.spec import load_sweep_file

    root = workspaces_on / "ws"
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    store = shutil.copytree(fx_store, root / "data" / "store")
    features, _ = extract_features(store, build_backbone(str(tiny_vit), device="cpu"), tag="t")
    monkeypatch.chdir(root)
    spec = load_sweep_file("cellvit_families", [], None, None)
    _default_features(spec)
    assert spec.sets[-1] == f"data.features={features.resolve()}"
    assert "features: data/store/features/t (the workspace's only feature store)" in (
        capsys.readouterr().err.replace("\n", "")
    )
    # a store given on the command line is left alone
    given = load_sweep_file("cellvit_families", ["data.features=/x"], None, None)
    _default_features(given)
    assert [s for s in given.sets if s.startswith("data.features")] == ["data.features=/x"]
