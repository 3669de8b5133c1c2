"""`cellbench init`, `cellbench config show|set|unset`, `cellbench status` and a bare `cellbench`:
in-process (CliRunner) from a folder of a workspace made in tmp."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()


@pytest.fixture
def ws(workspaces_on, monkeypatch):
    root = workspaces_on / "ws"
    result = runner.invoke(app, ["init", str(root)])
    assert result.exit_code == 0, result.output
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    return root


def values(ws):
    return yaml.safe_load((ws / "cellbench.yaml").read_text())


def test_init_writes_the_file_and_refuses_a_second_time(ws, monkeypatch):
    assert values(ws)["paths"] == {
        "data": "data",
        "runs": "runs",
        "sweeps": "sweeps",
        "workflows": "workflows",
        "profiles": "profiles",
    }
    again = runner.invoke(app, ["init", str(ws)])
    assert again.exit_code == 4
    assert "already a workspace" in again.stderr
    nested = runner.invoke(app, ["init", "inner"])  # inside ws/sub: a workspace of its own
    assert nested.exit_code == 0
    assert f"inside the workspace {ws / 'cellbench.yaml'}" in nested.stderr.replace("\n", "")


def test_config_set_checks_keys_and_values(ws, fx_store):
    bad_key = runner.invoke(app, ["config", "set", "defaults.featurs", "x"])
    assert bad_key.exit_code == 2 and "did you mean 'defaults.features'" in bad_key.stderr
    not_store = runner.invoke(app, ["config", "set", "defaults.data", str(ws)])
    assert not_store.exit_code == 3 and "not a data store" in not_store.stderr
    not_features = runner.invoke(app, ["config", "set", "defaults.features", str(fx_store)])
    assert not_features.exit_code == 3 and "not a feature store" in not_features.stderr
    wrong_task = runner.invoke(app, ["config", "set", "defaults.profiles.nuclei", "organ-demo"])
    assert wrong_task.exit_code == 2
    assert "profile organ-demo trains task organ, not nuclei" in wrong_task.stderr
    unknown = runner.invoke(app, ["config", "set", "defaults.profiles.organ", "organ-dem"])
    assert unknown.exit_code == 2 and "did you mean 'organ-demo'" in unknown.stderr
    bad_sweep = runner.invoke(app, ["config", "set", "defaults.sweep", "demo_phase"])
    assert bad_sweep.exit_code == 3 and "did you mean 'demo_phases'" in bad_sweep.stderr
    assert values(ws)["defaults"]["data"] is None  # nothing was written

    ok = runner.invoke(app, ["config", "set", "defaults.data", str(fx_store)])
    assert ok.exit_code == 0, ok.output
    assert values(ws)["defaults"]["data"] == str(fx_store)  # outside the workspace: absolute
    assert runner.invoke(app, ["config", "set", "defaults.sweep", "demo_phases"]).exit_code == 0
    assert runner.invoke(app, ["config", "set", "paths.runs", "../elsewhere"]).exit_code == 0
    # a path given from ws/sub is stored relative to the file
    assert values(ws)["paths"]["runs"] == "elsewhere"
    shown = runner.invoke(app, ["config", "show", "--json"])
    keys = json.loads(shown.stdout)["keys"]
    assert keys["defaults.sweep"]["value"] == "demo_phases"
    assert keys["paths.runs"]["path"] == str((ws / "elsewhere").resolve())

    assert runner.invoke(app, ["config", "unset", "paths.runs"]).exit_code == 0
    assert runner.invoke(app, ["config", "unset", "defaults.sweep"]).exit_code == 0
    assert values(ws)["paths"]["runs"] == "runs" and values(ws)["defaults"]["sweep"] is None


def test_config_outside_a_workspace(workspaces_on, monkeypatch):
    monkeypatch.chdir(workspaces_on)
    shown = runner.invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and "No workspace here or above" in shown.stdout
    refused = runner.invoke(app, ["config", "set", "defaults.sweep", "demo_phases"])
    assert refused.exit_code == 2 and "cellbench init makes one" in refused.stderr


def test_a_broken_workspace_file_is_one_line_naming_it_for_any_command(ws):
    (ws / "cellbench.yaml").write_text("version: 1\npaths:\n  runz: r\n")
    result = runner.invoke(app, ["runs", "list"])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"error: {ws / 'cellbench.yaml'}: unknown key 'paths.runz' (did you mean 'paths.runs'?)"
    )


def test_data_prepare_and_features_extract_record_defaults_inside_the_workspace_only(
    ws, fx_raw, tiny_vit
):
    outside = runner.invoke(
        app, ["data", "prepare", "--pannuke", str(fx_raw), "--out", str(ws.parent / "elsewhere")]
    )
    assert outside.exit_code == 0, outside.output
    assert values(ws)["defaults"]["data"] is None  # a store outside the workspace: not recorded
    inside = runner.invoke(
        app, ["data", "prepare", "--pannuke", str(fx_raw), "--out", str(ws / "data" / "store")]
    )
    assert inside.exit_code == 0, inside.output
    assert "workspace: defaults.data = data/store" in inside.stderr
    assert values(ws)["defaults"]["data"] == "data/store"
    # features extract takes the default data store, and records its own store
    extracted = runner.invoke(
        app, ["features", "extract", "--backbone", str(tiny_vit), "--device", "cpu"]
    )
    assert extracted.exit_code == 0, extracted.output
    assert "data: data/store (workspace default)" in extracted.stderr
    tag = values(ws)["defaults"]["features"]
    assert tag.startswith("data/store/features/") and (ws / tag / "manifest.json").is_file()
    # a second store does not replace the default
    runner.invoke(app, ["features", "extract", "--backbone", str(tiny_vit), "--tag", "two"])
    assert values(ws)["defaults"]["features"] == tag

    status = runner.invoke(app, ["status", "--json"])
    report = json.loads(status.stdout)
    stores = {(s["kind"], s["path"]): s for s in report["stores"]}
    assert (
        stores[("data", "data/store")]["default"] and stores[("data", "data/store")]["tiles"] == 20
    )
    assert stores[("features", tag)]["default"] and not stores[("features", tag)]["stale"]
    assert not stores[("features", "data/store/features/two")]["default"]
    assert report["disk"]["feature_stores"] > 0
    assert report["gpus"] or report["gpu_note"]  # devices, or why none ("no GPU")


def test_a_bare_cellbench_is_status(ws):
    result = runner.invoke(app, [])
    assert result.exit_code == 0, result.output
    assert f"workspace {ws / 'cellbench.yaml'}" in result.stdout.replace("\n", "")
    assert "no data or feature store" in result.stdout
    assert "commands: cellbench --help" in result.stderr


def test_status_shows_a_running_run_with_its_progress_and_unfinished_workflows(ws):
    from cellbench.engine.history import History
    from cellbench.runs.events import EventWriter
    from cellbench.runs.lock import RunLock
    from cellbench.runs.store import RunStore
    from tests.tui.conftest import CONFIG, epoch_event, start_event

    flow = ws / "workflows" / "retrain"
    flow.mkdir(parents=True)
    (flow / "state.json").write_text('{"status": "waiting at gate 2"}')
    run = RunStore(ws / "runs").create("live")  # the workspace's runs, from ws/sub
    run.config.write_text(CONFIG)
    with RunLock(run.lock), EventWriter(run.events) as writer:
        start_event(writer)
        epoch_event(writer, History(run.history), 1, 0.8)
        report = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
        text = runner.invoke(app, ["status"]).stdout.replace("\n", "")
    assert report["runs"]["by_status"] == {"running": 1}
    [live] = report["runs"]["running"]
    assert (live["run"], live["epoch"], live["epochs"]) == ("0001-live", 1, 3)
    assert "running 0001-live: epoch 1/3 · best val_loss 0.8" in text
    assert report["workflows"] == [{"workflow": "retrain", "status": "waiting at gate 2"}]
    assert "workflow retrain: waiting at gate 2" in text
