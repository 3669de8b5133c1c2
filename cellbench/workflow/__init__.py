"""Gated, resumable multi-phase studies (seeds/001 as a file): ``cellbench workflow``.

    spec      workflow files: parameters, phases, needs, gates (``load_workflow``)
    plan      fingerprints, and what a run would do per phase (run/resume/skip/check/clean)
    gates     a named check of a value a phase wrote, against a range, with a diagnosis
    commands  a phase's command adjusted for a fresh start or a resume (train, sweep, clean)
    progress  progress and ETA of a running phase, from what it writes
    state     the workflow folder ``workflows/<id>-<name>/`` and its ``state.json``
    runner    runs the plan, one process per phase, and records everything

The reader API below is what the TUI (and anyone else) uses: it reads files only, takes no
lock, starts nothing, and tolerates a workflow being written meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellbench.runs.lock import lock_holder_alive
from cellbench.workflow.state import (
    WorkflowFolder,
    default_workflows_root,
    read_json,
    state_problem,
    workflow_folders,
)

__all__ = ["default_workflows_root", "list_workflows", "read_workflow_state"]


def read_workflow_state(folder: str | Path) -> dict[str, Any]:
    """The state of one workflow folder: ``{"id", "name", "status", "phases": {name: {...}},
    "phase_order", "params", "stopped_at", ...}`` (see ``cellbench.workflow.state``); a phase
    entry holds ``status``, ``command``, ``started``/``ended``/``duration_s``, ``gates`` (each
    ``{name, ok, value, expected, diagnosis, source, values}``), ``outputs``, ``progress``,
    ``eta_s``. A missing or unreadable state gives ``{"status": "unknown", ...}``, one of the
    wrong shape ``{"status": "damaged", "problem": ...}``; a workflow recorded ``running``
    whose process is gone (killed, even with SIGKILL) reads as ``interrupted``."""
    wf = WorkflowFolder(Path(folder))
    try:
        data = read_json(wf.state, {})
    except Exception:  # noqa: BLE001 (a reader never fails: the TUI shows "unknown")
        data = {}
    problem = state_problem(data)
    if problem:
        data = {"status": "damaged", "problem": f"{wf.state}: damaged ({problem})"}
    data = dict(data or {})
    data.setdefault("status", "unknown")
    data.setdefault("phases", {})
    data.setdefault("phase_order", list(data["phases"]))
    data["folder"] = str(wf.root)
    if data["status"] == "running" and not lock_holder_alive(wf.lock):
        _mark_interrupted(data)
    return data


def _mark_interrupted(data: dict[str, Any]) -> None:
    """A workflow (and its running phase) whose process died without recording its end: the
    lock is the truth, as for runs and sweeps, so it is not shown running with an ETA forever.
    A rerun resumes it (``interrupted`` plans like ``running``)."""
    data["status"] = "interrupted"
    for rec in data["phases"].values():
        if rec.get("status") == "running":
            rec["status"] = "interrupted"
            rec["eta_s"] = None


def list_workflows(root: str | Path) -> list[dict[str, Any]]:
    """One summary per workflow folder under ``root`` (oldest first): ``id``, ``name``,
    ``folder``, ``status``, ``phases_done``/``phases``, ``current`` (the running or stopping
    phase), ``gates_failed``, ``updated``."""
    rows = []
    for wf in workflow_folders(Path(root)):
        state = read_workflow_state(wf.root)
        phases = state["phases"]
        order = state["phase_order"] or list(phases)
        done = sum(1 for n in order if (phases.get(n) or {}).get("status") == "done")
        current = next(
            (n for n in order if (phases.get(n) or {}).get("status") not in ("done", None)), None
        )
        failed = [
            g["name"]
            for n in order
            for g in (phases.get(n) or {}).get("gates") or []
            if not g.get("ok")
        ]
        rows.append(
            {
                "id": wf.id,
                "name": wf.name,
                "folder": str(wf.root),
                "status": state["status"],
                "phases_done": done,
                "phases": len(order),
                "current": current,
                "gates_failed": failed,
                "updated": state.get("updated"),
            }
        )
    return rows
