"""The plan of a workflow run: for each phase, run / resume / skip / check / clean, and why.

A phase's fingerprint hashes its resolved command, its ``json`` flag, the state of its
``inputs`` (size and modification time of every file under them) and the fingerprints of the
phases it needs — so a changed parameter changes the fingerprint of the phases whose command
uses it and of everything downstream of them, and nothing else. Gates are fingerprinted apart:
a changed threshold re-checks the gate on the files already written (``check``), no rerun.

A phase reruns when it never finished, when its fingerprint changed since it finished, or when
a phase it needs reruns. A phase that was running when the workflow stopped (a kill, Ctrl-C,
a failed command with the same fingerprint) is ``resume``d: ``train`` through ``--resume``, a
sweep by running the same sweep again (it skips finished trials and resumes the others), any
other command again with the same arguments (``features extract`` resumes by itself).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.workflow.spec import PhaseSpec, WorkflowSpec

MAX_INPUT_FILES = 20_000  # an input tree larger than this is fingerprinted by its first files


@dataclass
class Step:
    phase: PhaseSpec
    action: str  # run | resume | skip | check | clean
    why: str
    fingerprint: str
    gates_fingerprint: str
    eta_s: float | None = None  # from the last time this phase ran
    before: list[list[str]] = field(default_factory=list)  # commands run first (a run's clean)
    refused: str | None = None  # why the workflow will not run (a run it did not make)

    @property
    def runs(self) -> bool:
        return self.action in ("run", "resume", "clean")

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.name,
            "action": self.action,
            "why": self.why,
            "command": self.phase.display(),
            "fingerprint": self.fingerprint,
            "eta_s": self.eta_s,
            "before": self.before,
            "refused": self.refused,
        }


def input_signature(path: str) -> list[Any]:
    """Size and mtime of a file, or of every file under a folder (sorted); ``missing``."""
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return [p.name, st.st_size, st.st_mtime_ns]
    if not p.is_dir():
        return ["missing"]
    out: list[Any] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue
            out.append([str(full.relative_to(p)), st.st_size, st.st_mtime_ns])
            if len(out) >= MAX_INPUT_FILES:
                return out
    return out


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprints(spec: WorkflowSpec) -> dict[str, tuple[str, str]]:
    """``{phase: (fingerprint, gates fingerprint)}`` in file order."""
    out: dict[str, tuple[str, str]] = {}
    for phase in spec.phases:
        own = {
            "argv": phase.argv,
            "json": phase.json,
            "inputs": {i: input_signature(i) for i in phase.inputs},
            "needs": {n: out[n][0] for n in phase.needs},
        }
        if phase.only_if_exists is not None:
            own["exists"] = Path(phase.only_if_exists).expanduser().exists()
        gates = [g.__dict__ for g in phase.gates]
        out[phase.name] = (_hash(own), _hash(gates))
    return out


def first_difference(old: list[str] | None, new: list[str]) -> str:
    if not old:
        return "command changed"
    for a, b in zip(old, new, strict=False):
        if a != b:
            return f"command changed: {a} -> {b}"
    return "command changed: " + ("arguments added" if len(new) > len(old) else "arguments removed")


def make_plan(
    spec: WorkflowSpec,
    phases_state: dict[str, dict[str, Any]],
    from_phase: str | None = None,
    only: str | None = None,
    fresh: bool = False,
) -> list[Step]:
    names = spec.names()
    if from_phase is not None:
        spec.phase(from_phase)  # an unknown name exits 2 with the phase list
    if only is not None:
        spec.phase(only)
    start = names.index(from_phase) if from_phase else None
    fps = fingerprints(spec)
    steps: list[Step] = []
    rerun: set[str] = set()
    for index, phase in enumerate(spec.phases):
        fp, gates_fp = fps[phase.name]
        rec = phases_state.get(phase.name) or {}
        status = rec.get("status", "pending")
        same = rec.get("fingerprint") == fp
        eta = rec.get("last_duration_s")
        upstream = [n for n in phase.needs if n in rerun]
        if only is not None and phase.name != only:
            action, why = "skip", f"not the --only phase ({only})"
        elif only is not None:
            action, why = "run", "--only"
        elif fresh:
            action, why = "run", "--fresh"
        elif start is not None and index >= start:
            action, why = "run", f"--from {from_phase}"
        elif start is not None:
            action, why = "skip", f"before --from {from_phase}"
        elif status == "pending" or not rec:
            action, why = "run", "not run yet"
        elif upstream:
            action, why = "run", f"{', '.join(upstream)} reruns"
        elif status == "done" and same:
            action, why = "skip", "done"
            if rec.get("gates_fingerprint") != gates_fp:
                action, why = "check", "gates changed: checked again on what it wrote"
        elif status == "done":
            action, why = "run", first_difference(rec.get("argv"), phase.argv)
            if rec.get("argv") == phase.argv:
                action, why = "run", "an input or a needed phase changed"
        elif status in ("running", "interrupted", "failed", "gate_failed") and same:
            action, why = "resume", f"{status.replace('_', ' ')} last time"
        else:
            action, why = "run", first_difference(rec.get("argv"), phase.argv)
        if phase.is_cleanup and action in ("run", "resume"):
            action = "clean"
        if action in ("run", "resume", "clean"):
            rerun.add(phase.name)
        steps.append(Step(phase, action, why, fp, gates_fp, eta))
    return steps
