"""Progress and ETA of a running phase, from what it writes: a training's epoch events, a
feature store's fold manifests, a sweep's state."""

from __future__ import annotations

import json

import pytest

from cellbench.runs.store import RunStore
from cellbench.workflow.progress import extraction_progress, sweep_progress, train_progress
from cellbench.workflow.spec import PhaseSpec


def test_a_training_eta_is_seconds_per_epoch_times_epochs_left_across_a_resume(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("dig")
    run.config.write_text("task: nuclei\ntrain:\n  epochs: 10\n")
    events = [("run_start", 0), ("epoch", 10), ("epoch", 20), ("run_start", 100), ("epoch", 112)]
    run.events.write_text(
        "".join(
            json.dumps({"kind": k, "time": t, **({"epoch": i} if k == "epoch" else {})}) + "\n"
            for i, (k, t) in enumerate(events)
        )
    )
    phase = PhaseSpec("decoder", "d", ["train", "--run", "dig"], [])
    measured = train_progress(phase, store)
    assert measured["progress"] == "epoch 4/10"  # epoch numbers as written: 1, 2, 4
    assert measured["eta_s"] == pytest.approx((10 + 10 + 12) / 3 * 6)


def test_extraction_and_sweep_progress(tmp_path):
    tag = tmp_path / "features" / "vit"
    for k, (done, complete) in enumerate([(40, True), (10, False)], start=1):
        (tag / f"fold{k}").mkdir(parents=True)
        manifest = {"format": "cellbench-feature-store", "tiles": 40, "done": done,
                    "complete": complete}  # fmt: skip
        (tag / f"fold{k}" / "manifest.json").write_text(json.dumps(manifest))
    phase = PhaseSpec("extract", "e", ["features", "extract"], [], outputs=[str(tag)])
    import time

    measured = extraction_progress(phase, started=time.time() - 50)
    assert measured["progress"] == "50/80 tiles" and measured["eta_s"] == pytest.approx(30, rel=0.1)

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "trials.json").write_text(json.dumps([{"id": f"t{i}"} for i in range(5)]))
    trials = {"t0": {"status": "completed", "started": 0, "ended": 100},
              "t1": {"status": "running", "started": 100}}  # fmt: skip
    (sweep / "state.json").write_text(json.dumps({"trials": trials}))
    measured = sweep_progress(sweep)
    assert measured["progress"] == "1/5 trials" and measured["eta_s"] == pytest.approx(400)
