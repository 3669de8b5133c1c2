"""The workflow folder ``<workflows root>/<id>-<name>/`` and its ``state.json``.

    spec.yaml       the resolved workflow (parameters substituted) of the last run
    state.json      the workflow's status, and per phase: status, fingerprint, command, times,
                    exit code, gate values, outputs, progress and ETA; ``made_runs``: the run
                    folders its train phases created (the only runs it cleans or resumes)
    log.txt         one line per event (phase started, ended, gate, cleanup), appended
    outputs/        the JSON each ``json: true`` phase printed (what its gates read)
    lock            held while a process runs the workflow (a second one exits 4)

The root is ``--workflows-dir``, else ``$CELLBENCH_WORKFLOWS_DIR``, else the workspace's
``paths.workflows``, else ``workflows`` beside the runs root. Ids are sequential like runs'.
Every file is written atomically (``cellbench.atomic``): a kill leaves the old state or the new
one.

Phase statuses: pending · running · done · failed (the command failed) · gate_failed ·
interrupted. Workflow statuses: running · completed (every phase done) · incomplete (``--only``
or ``--from`` left phases not done) · failed · gate_failed · interrupted. Readers add
``interrupted`` for a ``running`` workflow whose lock no live process holds, and ``damaged``
for a state of the wrong shape (``state_problem``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellbench.atomic import atomic_write_text
from cellbench.errors import BadInputError
from cellbench.json_state import JsonState
from cellbench.json_state import read_json as _read

WORKFLOWS_DIR_ENV = "CELLBENCH_WORKFLOWS_DIR"
FOLDER_RE = re.compile(r"(?P<id>\d{4,})-(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)\Z")


def default_workflows_root(runs_root: Path) -> Path:
    env = os.environ.get(WORKFLOWS_DIR_ENV)
    if env:
        return Path(env)
    from cellbench.workspace import current  # cellbench.yaml's paths.workflows (#21)

    ws = current()
    return ws.folder("workflows") if ws is not None else Path(runs_root).parent / "workflows"


@dataclass
class WorkflowFolder:
    root: Path

    @property
    def id(self) -> int:
        return int(FOLDER_RE.fullmatch(self.root.name)["id"])

    @property
    def name(self) -> str:
        return FOLDER_RE.fullmatch(self.root.name)["name"]

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def output_file(self, phase: str) -> Path:
        return self.outputs / f"{phase}.json"

    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_text(self.spec, yaml.safe_dump(spec, sort_keys=False))

    def append_log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")


def _entries(root: Path) -> list[WorkflowFolder]:
    """Everything under ``root`` named like a workflow folder, a stray file included."""
    if not Path(root).is_dir():
        return []
    return [WorkflowFolder(p) for p in Path(root).iterdir() if FOLDER_RE.fullmatch(p.name)]


def workflow_folders(root: Path) -> list[WorkflowFolder]:
    """Every workflow folder under ``root``, oldest first (a file named like one is not)."""
    return sorted((f for f in _entries(root) if f.root.is_dir()), key=lambda f: f.id)


def find_workflow(root: Path, ref: str) -> WorkflowFolder | None:
    """By id (``3``), folder name (``0003-demo``) or name (the newest of that name): what a
    user types to ``workflow show``."""
    folders = workflow_folders(root)
    if ref.isdigit():
        return next((f for f in folders if f.id == int(ref)), None)
    for folder in reversed(folders):
        if ref in (folder.root.name, folder.name):
            return folder
    return None


def newest_named(root: Path, name: str) -> WorkflowFolder | None:
    """The newest folder of the workflow called ``name``: what a rerun resumes. By name only,
    never by id or folder name: a workflow named ``2`` or ``0001-x`` must not take over folder
    ``0002-other`` or workflow x's ``0001-x``."""
    return next((f for f in reversed(workflow_folders(root)) if f.name == name), None)


def create_workflow(root: Path, name: str) -> WorkflowFolder:
    """A new folder with the next id (``mkdir`` without exist_ok: two creators never share one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        # ids of stray files too: the next id must be one that mkdir can take
        taken = [f.id for f in _entries(root)]
        next_id = max(taken, default=0) + 1
        path = root / f"{next_id:04d}-{name}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return WorkflowFolder(path)


def read_json(path: Path, default: Any) -> Any:
    return _read(path, default, "workflow state")


_NUMBER = (int, float)
# what readers and the runner read of a phase entry, by type (None is allowed for each)
_PHASE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "command": str,
    "fingerprint": str,
    "gates_fingerprint": str,
    "argv": list,
    "started": _NUMBER,
    "ended": _NUMBER,
    "duration_s": _NUMBER,
    "last_duration_s": _NUMBER,
    "eta_s": _NUMBER,
    "attempts": int,
    "sweep_generation": int,
    "progress": str,
    "gates": list,
    "outputs": list,
    "bytes_freed": _NUMBER,
}
_GATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "expected": str,
    "diagnosis": str,
    "source": str,
}


def _wrong_field(entry: dict, fields: dict, where: str) -> str | None:
    for key, kind in fields.items():
        value = entry.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{where}.{key} has the wrong type ({type(value).__name__})"
    return None


def _gate_problem(gate: Any, where: str) -> str | None:
    if not isinstance(gate, dict) or not isinstance(gate.get("name"), str):
        return f"{where} is not a gate record"
    return _wrong_field(gate, _GATE_FIELDS, where)


def _phase_problem(rec: Any, where: str) -> str | None:
    if not isinstance(rec, dict):
        return f"{where} is not an object"
    problem = _wrong_field(rec, _PHASE_FIELDS, where)
    for i, gate in enumerate(rec.get("gates") or []):
        problem = problem or _gate_problem(gate, f"{where}.gates[{i}]")
    if not all(isinstance(o, str) for o in rec.get("outputs") or []):
        problem = problem or f"{where}.outputs is not a list of paths"
    return problem


def _strings_problem(data: dict, key: str) -> str | None:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"'{key}' is not a list of names"
    return None


def state_problem(data: Any) -> str | None:
    """What is wrong with the shape of a ``state.json`` (None: nothing): a file cellbench did
    not write that way (edited by hand, another version). Checked once, where it is read, so
    no reader or runner fails half-way on a field of the wrong type."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("status", ""), str):
        return "'status' is not a word"
    phases = data.get("phases", {})
    if not isinstance(phases, dict):
        return "'phases' is not an object"
    for name, rec in phases.items():
        problem = _phase_problem(rec, f"phases.{name}")
        if problem:
            return problem
    stopped = data.get("stopped_at")
    if stopped is not None and not (
        isinstance(stopped, dict) and isinstance(stopped.get("phase"), str)
    ):
        return "'stopped_at' is not a phase and gate"
    if stopped is not None:
        problem = _gate_problem(stopped.get("gate"), "stopped_at.gate")
        if problem:
            return problem
    return _strings_problem(data, "phase_order") or _strings_problem(data, MADE_RUNS)


MADE_RUNS = "made_runs"  # the run folders this workflow's train phases created


class WorkflowState(JsonState):
    """``state.json`` in memory, saved after every change (``cellbench.json_state``: one
    writer, the lock holder; the ETA monitor thread writes through the same object)."""

    def __init__(self, folder: WorkflowFolder):
        self.folder = folder
        super().__init__(
            folder.state,
            {"id": folder.id, "name": folder.name, "status": "created", "phases": {}},
            "workflow state",
        )
        problem = state_problem(self.data)
        if problem:
            raise BadInputError(
                f"{folder.state}: damaged workflow state ({problem}); fix it, or remove it "
                "to run the workflow from the start"
            )

    def phase(self, name: str) -> dict[str, Any]:
        return self.entry("phases", name)

    def set_phase(self, name: str, **values: Any) -> None:
        self.update_entry("phases", name, **values)

    def made_runs(self) -> set[str]:
        """The run folders (``0003-dec``) this workflow's phases created: the only runs it
        cleans and restarts."""
        return set(self.data.get(MADE_RUNS) or [])

    def add_made_run(self, folder_name: str) -> None:
        if folder_name not in self.made_runs():
            self.set(**{MADE_RUNS: sorted(self.made_runs() | {folder_name})})
