"""Progress and ETA of a running phase, from what the phase writes as it goes.

- ``train``: the run's ``epoch`` events against ``train.epochs`` of its ``config.yaml``; the
  seconds per epoch measured so far (the first epoch's, then the mean) times the epochs left.
- a phase with a feature store among its ``outputs`` (``features extract``): the fold
  manifests' ``done``/``tiles``; tiles per second since the phase started times the tiles left.
- ``sweep``: trials finished against trials resolved in the sweep folder; the mean time of a
  finished trial times the trials left, divided by the trials running at once.

Nothing here parses printed text. A phase none of these fits has no ETA while it runs; before
it runs, the plan shows how long it took the last time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cellbench.runs.store import RunStore
from cellbench.workflow.commands import train_run_name
from cellbench.workflow.spec import PhaseSpec


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train_progress(phase: PhaseSpec, store: RunStore) -> dict[str, Any] | None:
    import yaml

    from cellbench.runs.events import read_events

    name = train_run_name(phase)
    run = store.find(name) if name else None
    if run is None:
        return None
    try:
        config = yaml.safe_load(run.config.read_text()) or {}
        total = int((config.get("train") or {}).get("epochs") or 0)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None
    # each epoch's duration: from the run's (re)start or the epoch before; a resume's restart
    # is not counted as training time
    durations, since, done = [], None, 0
    for event in read_events(run.events):
        if event.get("kind") == "run_start":
            since = event.get("time")
        elif event.get("kind") == "epoch" and since is not None:
            durations.append(event.get("time", since) - since)
            since = event.get("time")
            done = max(done, int(event.get("epoch", 0)))
    if since is None or not total:
        return None
    out: dict[str, Any] = {"progress": f"epoch {done}/{total}", "eta_s": None}
    if durations:
        per_epoch = sum(durations) / len(durations)
        out["rate"] = f"{per_epoch:.1f} s/epoch"
        out["eta_s"] = per_epoch * max(0, total - done)
    return out


def extraction_progress(phase: PhaseSpec, started: float) -> dict[str, Any] | None:
    done = total = 0
    for output in phase.outputs:
        for manifest in Path(output).glob("fold*/manifest.json"):
            data = _read(manifest) or {}
            if data.get("format") != "cellbench-feature-store":
                continue
            tiles = int(data.get("tiles") or 0)
            total += tiles
            done += tiles if data.get("complete") else int(data.get("done") or 0)
    if not total:
        return None
    elapsed = max(1e-6, time.time() - started)
    out: dict[str, Any] = {"progress": f"{done}/{total} tiles", "eta_s": None}
    if done:
        rate = done / elapsed
        out["rate"] = f"{rate:.1f} tiles/s"
        out["eta_s"] = (total - done) / rate
    return out


def sweep_progress(sweep_dir: Path) -> dict[str, Any] | None:
    trials = _read(sweep_dir / "trials.json") or []
    state = (_read(sweep_dir / "state.json") or {}).get("trials") or {}
    if not trials:
        return None
    finished = [t for t in state.values() if t.get("status") in ("completed", "failed", "pruned")]
    running = sum(1 for t in state.values() if t.get("status") == "running")
    out: dict[str, Any] = {"progress": f"{len(finished)}/{len(trials)} trials", "eta_s": None}
    times = [
        t["ended"] - t["started"]
        for t in finished
        if t.get("ended") is not None and t.get("started") is not None
    ]
    if times:
        mean = sum(times) / len(times)
        out["rate"] = f"{mean:.0f} s/trial"
        out["eta_s"] = mean * (len(trials) - len(finished)) / max(1, running)
    return out


def measure(
    phase: PhaseSpec, store: RunStore, started: float, sweep_dir: Path | None
) -> dict[str, Any] | None:
    if phase.command == "train":
        return train_progress(phase, store)
    if phase.is_sweep and sweep_dir is not None:
        return sweep_progress(sweep_dir)
    return extraction_progress(phase, started)
