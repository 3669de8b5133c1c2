"""``cellbench workflow``: the demo end to end with every gate recorded, a planted bad feature
store stopped at the CLS gate, a SIGKILL during the family sweep resumed to the same results,
one changed value rerunning exactly its phases, and the refusals (exit 2, 3, 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.events import read_events
from cellbench.runs.lock import RunLock, lock_holder_alive
from cellbench.runs.store import RunStore
from cellbench.workflow import list_workflows, read_workflow_state
from cellbench.workflow.spec import load_workflow

runner = CliRunner()
# the demo at its smallest: 20 tiles per fold (the digestive family has tiles in every fold),
# one decoder epoch; the quality floors are off (a 1-epoch decoder is not a trained one), the
# seeds' bug gates (CLS std, HV dtype and range, HV MSE) keep their values
SMALL_DEMO = ["tiles=20", "epochs=1", "organ_epochs=2", "min_np_dice=0", "min_organ_accuracy=0"]


def sets(*texts: str) -> list[str]:
    return [a for t in texts for a in ("--set", t)]


def state_of(root: Path, name: str) -> dict:
    return read_workflow_state(next((root / "workflows").glob(f"*-{name}")))


@pytest.mark.slow
def test_the_demo_runs_every_phase_records_every_gate_and_reruns_only_what_a_change_touches(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["workflow", "run", "demo", *sets(*SMALL_DEMO)])
    assert first.exit_code == 0, first.output[-3000:]
    state = state_of(tmp_path, "demo")
    spec = load_workflow("demo", SMALL_DEMO)
    assert state["status"] == "completed" and state["phase_order"] == spec.names()
    for phase in spec.phases:
        rec = state["phases"][phase.name]
        assert rec["status"] == "done" and rec["attempts"] == 1, phase.name
        assert [g["name"] for g in rec["gates"]] == [g.name for g in phase.gates]
        for gate in rec["gates"]:
            assert gate["ok"] and gate["value"] is not None and gate["values"], gate
    cls = state["phases"]["features-check"]["gates"][0]
    assert 0.5 <= cls["value"] <= 1.5 and len(cls["values"]) == 3  # one per fold
    assert "bytes_freed" not in state["phases"]["cleanup"]  # no old store yet: nothing to clean
    assert "gate cls_std" in first.stdout
    assert "$ cellbench train --profile nuclei-demo" in first.stdout

    # an old feature store appears; then one value changes: the organ head's epochs
    features = tmp_path / "data/quickstart/pannuke/features"
    shutil.copytree(features / "vit-demo", features / "vit-demo-old")
    change = sets(*SMALL_DEMO, "organ_epochs=3")
    plan = runner.invoke(app, ["workflow", "run", "demo", *change, "--dry-run", "--json"])
    assert plan.exit_code == 0, plan.output[-2000:]
    actions = {s["phase"]: s["action"] for s in json.loads(plan.stdout)["plan"]}
    assert {p: a for p, a in actions.items() if a != "skip"} == {"organ": "run", "cleanup": "clean"}
    assert read_workflow_state(Path(state["folder"]))["phases"] == state["phases"]  # dry: no write

    second = runner.invoke(app, ["workflow", "run", "demo", *change])
    assert second.exit_code == 0, second.output[-3000:]
    after = state_of(tmp_path, "demo")["phases"]
    attempts = {name: rec["attempts"] for name, rec in after.items()}
    assert attempts == {**{n: 1 for n in spec.names()}, "organ": 2, "cleanup": 2}
    assert after["cleanup"]["bytes_freed"] > 0 and not (features / "vit-demo-old").exists()
    assert (features / "vit-demo" / "manifest.json").is_file()
    organ = RunStore(tmp_path / "runs").resolve("quickstart-organ")
    assert json.loads(organ.metrics.read_text())["epochs"] == 3

    listed = runner.invoke(app, ["workflow", "list", "--json"])
    rows = json.loads(listed.stdout)["workflows"]
    assert [(r["name"], r["status"], r["phases_done"]) for r in rows] == [
        ("demo", "completed", len(spec.phases))
    ]
    assert list_workflows("workflows") == rows  # the reader API: what the CLI printed
    shown = runner.invoke(app, ["workflow", "show", "demo"])
    assert shown.exit_code == 0 and "organ_accuracy" in shown.stdout and "freed" in shown.stdout


@pytest.mark.slow
def test_a_feature_store_without_the_final_norm_stops_at_the_cls_gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from cellbench.config import PROFILES_DIR

    profile = yaml.safe_load((PROFILES_DIR / "backbones/vit-demo.yaml").read_text())
    profile["kwargs"]["final_norm"] = False  # the CLS token as it leaves the last block
    (tmp_path / "no-final-norm.yaml").write_text(yaml.safe_dump(profile))
    settings = sets("tiles=8", "backbone=no-final-norm.yaml", "tag=no-final-norm")
    result = runner.invoke(app, ["workflow", "run", "demo", *settings])
    assert result.exit_code == 1, result.output[-3000:]
    error = result.stderr
    assert "gate cls_std of phase features-check failed" in error
    assert "expected 0.5 .. 1.5" in error and "CLS std 0.28: the final norm is missing" in error
    state = state_of(tmp_path, "demo")
    phases = state["phases"]
    assert state["status"] == "gate_failed" and phases["features-check"]["status"] == "gate_failed"
    gate = phases["features-check"]["gates"][0]
    assert not gate["ok"] and gate["value"] < 0.5
    later = ["organ", "decoder", "tune", "test-eval", "rescore", "examples", "predict", "cleanup"]
    assert all(p not in phases for p in later)  # never started
    assert RunStore(tmp_path / "runs").runs() == []  # no training ran
    shown = runner.invoke(app, ["workflow", "show"])
    assert "stopped at features-check" in shown.stdout


FAMILY_WORKFLOW = """
name: fam
params: {root: ., backbone: null, sweep_file: null}
phases:
  - {name: synth, command: "data synth --out ${root}/raw --tiles 16 --size 64"}
  - {name: prepare, command: "data prepare --pannuke ${root}/raw --out ${root}/store"}
  - name: extract
    command: features extract --data ${root}/store --backbone ${backbone} --tag tiny --device cpu
  - name: families
    command: sweep ${sweep_file} --set data.features=${root}/store/features/tiny
    gates:
      - {name: hv_mse, trials: true, key: best.metrics.val_hv_mse, max: 1.0,
         diagnosis: "HV MSE in the thousands: HV stored as int8"}
"""
FAMILY_SWEEP = """
name: families
profile: nuclei-demo
set: {nuclei.widths: [8, 8], nuclei.stem: [8, 8], train.batch_size: 4, train.epochs: 3,
      train.log_every: 1, train.lr: 0.003, eval.pq_every: 3}
space:
  data.family: [digestive, glandular]
"""


def _family_setup(root: Path) -> list[str]:
    from tests.helpers_nuclei import NUCLEI_VIT

    root.mkdir()
    (root / "fam.yaml").write_text(FAMILY_WORKFLOW)
    (root / "sweep.yaml").write_text(FAMILY_SWEEP)
    (root / "vit.yaml").write_text(yaml.safe_dump(NUCLEI_VIT))
    params = sets(f"backbone={root / 'vit.yaml'}", f"sweep_file={root / 'sweep.yaml'}")
    return ["workflow", "run", str(root / "fam.yaml"), *params]


def _trial_runs(root: Path) -> dict[str, Path]:
    return {run.name.split("-t0")[1]: run for run in RunStore(root / "runs").runs()}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_a_workflow_killed_during_the_family_sweep_resumes_there_with_the_same_results(
    tmp_path, monkeypatch
):
    pytest.importorskip("cellbench.tasks.nuclei")
    import torch

    whole_root, killed_root = tmp_path / "whole", tmp_path / "killed"
    whole_args = _family_setup(whole_root)
    monkeypatch.chdir(whole_root)
    whole = runner.invoke(app, whole_args)
    assert whole.exit_code == 0, whole.output[-3000:]

    killed_args = _family_setup(killed_root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellbench", *killed_args],
        cwd=killed_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            runs = RunStore(killed_root / "runs").runs()
            if runs and read_events(runs[0].events, kind="epoch"):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGKILL)  # no handler: only the kernel's parent-death signals
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = RunStore(killed_root / "runs").runs()[0]
    sweep_lock = next((killed_root / "sweeps").glob("*/lock"), None)
    deadline = time.monotonic() + 120  # the sweep and its trial checkpoint and stop
    while time.monotonic() < deadline and (
        not read_events(first.events, kind="run_end")
        or (sweep_lock is not None and lock_holder_alive(sweep_lock))
    ):
        time.sleep(0.2)
    assert read_events(first.events, kind="run_end")[-1]["status"] == "interrupted"
    before = state_of(killed_root, "fam")["phases"]
    # killed while running (SIGKILL left "running" on disk): its reader says interrupted
    assert before["families"]["status"] == "interrupted" and before["extract"]["status"] == "done"

    monkeypatch.chdir(killed_root)
    plan = runner.invoke(app, [*killed_args, "--dry-run", "--json"])
    actions = {s["phase"]: s["action"] for s in json.loads(plan.stdout)["plan"]}
    assert actions == {"synth": "skip", "prepare": "skip", "extract": "skip", "families": "resume"}
    resumed = runner.invoke(app, killed_args)
    assert resumed.exit_code == 0, resumed.output[-3000:]
    after = state_of(killed_root, "fam")["phases"]
    assert after["families"]["attempts"] == 2 and after["extract"]["attempts"] == 1
    assert len(after["families"]["gates"][0]["values"]) == 2  # each family gated
    assert any(e.get("resumed") for e in read_events(first.events, kind="run_start"))

    whole_runs, killed_runs = _trial_runs(whole_root), _trial_runs(killed_root)
    assert sorted(whole_runs) == sorted(killed_runs) and len(whole_runs) == 2
    for trial, reference in whole_runs.items():
        mine = killed_runs[trial]
        assert mine.history.read_text() == reference.history.read_text(), trial
        a = torch.load(reference.last_checkpoint, weights_only=True)["model"]
        b = torch.load(mine.last_checkpoint, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), trial


TWO_PHASES = """
name: tiny
params: {store: nowhere}
phases:
  - {name: check, command: "data check ${store}"}
  - {name: after, command: "data check ${store}"}
"""


def test_a_failing_phase_stops_the_workflow_with_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TWO_PHASES)
    result = runner.invoke(app, ["workflow", "run", "tiny.yaml"])
    assert result.exit_code == 3, result.output
    assert "stopped at phase check" in result.stderr and "exited 3" in result.stderr
    phases = state_of(tmp_path, "tiny")["phases"]
    assert phases["check"]["status"] == "failed" and "after" not in phases
    log = (next((tmp_path / "workflows").glob("*-tiny")) / "log.txt").read_text()
    assert "phase check exited 3" in log


def test_refusals_exit_2_3_and_4(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TWO_PHASES)
    both = runner.invoke(app, ["workflow", "run", "tiny.yaml", "--from", "a", "--only", "b"])
    assert both.exit_code == 2
    unknown = runner.invoke(app, ["workflow", "run", "tiny.yaml", "--from", "chek"])
    assert unknown.exit_code == 2 and "did you mean 'check'" in unknown.stderr
    missing = runner.invoke(app, ["workflow", "run", "nope"])
    assert missing.exit_code == 3 and "no such workflow file" in missing.stderr
    folder = tmp_path / "workflows" / "0001-tiny"
    folder.mkdir(parents=True)
    with RunLock(folder / "lock"):  # another process runs it (this one is alive)
        locked = runner.invoke(app, ["workflow", "run", "tiny.yaml"])
    assert locked.exit_code == 4 and "locked by pid" in locked.stderr
    assert not (folder / "state.json").exists()


def test_the_reader_api_tolerates_an_empty_or_torn_state(tmp_path):
    assert list_workflows(tmp_path / "none") == []
    folder = tmp_path / "0003-demo"
    folder.mkdir()
    (folder / "state.json").write_text('{"status": "runn')  # torn
    assert read_workflow_state(folder)["status"] == "unknown"
    (folder / "state.json").write_text(json.dumps({
        "status": "running", "phase_order": ["a", "b"],
        "phases": {"a": {"status": "done", "gates": [{"name": "g", "ok": False}]},
                   "b": {"status": "running"}}}))  # fmt: skip
    [row] = list_workflows(tmp_path)
    assert (row["id"], row["name"], row["current"], row["gates_failed"]) == (3, "demo", "b", ["g"])
    assert os.path.samefile(row["folder"], folder)


HAND_RUN = """
params: {run: r1}
phases:
  - {name: t, command: "train --data data/shapes --model simple_cnn --epochs 1 --run ${run}"}
"""


def test_a_run_the_workflow_did_not_make_is_refused_and_nothing_of_it_deleted(
    tmp_path, monkeypatch
):
    """The tester's repro: a training by hand with the user's notes in it, then a workflow
    whose train phase names that run. It used to run `clean --run r1 --all --yes` first."""
    monkeypatch.chdir(tmp_path)
    run = RunStore(tmp_path / "runs").create("r1")
    run.metrics.write_text("{}")  # trained
    (run.root / "NOTES.md").write_text("notes")
    (tmp_path / "wf2.yaml").write_text(HAND_RUN)
    plan = runner.invoke(app, ["workflow", "run", "wf2.yaml", "--dry-run", "--json"])
    assert plan.exit_code == 4 and "refused" in json.loads(plan.stdout)["plan"][0]["why"]
    result = runner.invoke(app, ["workflow", "run", "wf2.yaml"])
    assert result.exit_code == 4, result.output
    error = result.stderr.strip()
    assert error.startswith("error: runs/0001-r1: phase t of workflow wf2 trains run 'r1'")
    assert "another run name" in error and "\n" not in error
    assert (run.root / "NOTES.md").read_text() == "notes" and run.metrics.is_file()
    assert not (tmp_path / "workflows").exists()  # nothing ran, nothing recorded


def test_list_and_show_tolerate_a_damaged_state_and_run_refuses_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TWO_PHASES)
    good, bad = tmp_path / "workflows/0001-demo", tmp_path / "workflows/0002-tiny"
    for folder, state in ((good, {"status": "completed"}), (bad, {"phases": {"check": "x"}})):
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(state))
    listed = runner.invoke(app, ["workflow", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)["workflows"]
    assert [(r["name"], r["status"]) for r in rows] == [("demo", "completed"), ("tiny", "damaged")]
    shown = runner.invoke(app, ["workflow", "show", "tiny"])
    assert shown.exit_code == 0, shown.output
    assert "damaged (phases.check is not an object)" in shown.stdout.replace("\n", "")
    ran = runner.invoke(app, ["workflow", "run", "tiny.yaml"])
    assert ran.exit_code == 3, ran.output
    assert ran.stderr.startswith(f"error: {Path('workflows/0002-tiny/state.json')}: damaged")
    assert json.loads((bad / "state.json").read_text()) == {"phases": {"check": "x"}}


def test_a_killed_workflow_reads_as_interrupted_not_running_forever(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "workflows/0001-tiny"
    folder.mkdir(parents=True)
    phase = {"status": "running", "started": time.time(), "eta_s": 60.0}
    state = {"status": "running", "phase_order": ["check"], "phases": {"check": phase}}
    (folder / "state.json").write_text(json.dumps(state))
    state = read_workflow_state(folder)  # SIGKILLed: no process holds its lock
    assert state["status"] == "interrupted" and state["phases"]["check"]["status"] == "interrupted"
    shown = runner.invoke(app, ["workflow", "show", "tiny"])
    assert "interrupted" in shown.stdout and "ETA" not in shown.stdout
    assert (
        json.loads(runner.invoke(app, ["status", "--json"]).stdout)["workflows"][0]["status"]
        == "interrupted"
    )
    with RunLock(folder / "lock"):  # a live process runs it
        assert [r["status"] for r in list_workflows(tmp_path / "workflows")] == ["running"]
        assert "ETA" in runner.invoke(app, ["workflow", "show", "tiny"]).stdout


def test_a_file_named_like_a_workflow_folder_is_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TWO_PHASES)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows/0001-tiny").write_text("x")
    result = runner.invoke(app, ["workflow", "run", "tiny.yaml"])
    assert result.exit_code == 3 and "stopped at phase check" in result.stderr, result.output
    assert (tmp_path / "workflows/0001-tiny").read_text() == "x"
    assert read_workflow_state(tmp_path / "workflows/0002-tiny")["status"] == "failed"
