"""The workflow folder ``<workflows root>/<id>-<name>/`` and its ``state.json``.

    spec.yaml       the resolved workflow (parameters substituted) of the last run
    state.json      the workflow's status, and per phase: status, fingerprint, command, times,
                    exit code, gate values, outputs, progress and ETA
    log.txt         one line per event (phase started, ended, gate, cleanup), appended
    outputs/        the JSON each ``json: true`` phase printed (what its gates read)
    lock            held while a process runs the workflow (a second one exits 4)

The root is ``--workflows-dir``, else ``$CELLBENCH_WORKFLOWS_DIR``, else the workspace's
``paths.workflows``, else ``workflows`` beside the runs root. Ids are sequential like runs'.
Every file is written atomically (``cellbench.atomic``): a kill leaves the old state or the new
one.

Phase statuses: pending · running · done · failed (the command failed) · gate_failed ·
interrupted. Workflow statuses: running · completed (every phase done) · incomplete (``--only``
or ``--from`` left phases not done) · failed · gate_failed · interrupted.
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


def workflow_folders(root: Path) -> list[WorkflowFolder]:
    """Every workflow folder under ``root``, oldest first."""
    if not Path(root).is_dir():
        return []
    found = [WorkflowFolder(p) for p in Path(root).iterdir() if FOLDER_RE.fullmatch(p.name)]
    return sorted(found, key=lambda f: f.id)


def find_workflow(root: Path, ref: str) -> WorkflowFolder | None:
    """By id (``3``), folder name (``0003-demo``) or name (the newest of that name)."""
    folders = workflow_folders(root)
    if ref.isdigit():
        return next((f for f in folders if f.id == int(ref)), None)
    for folder in reversed(folders):
        if ref in (folder.root.name, folder.name):
            return folder
    return None


def create_workflow(root: Path, name: str) -> WorkflowFolder:
    """A new folder with the next id (``mkdir`` without exist_ok: two creators never share one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        folders = workflow_folders(root)
        next_id = (folders[-1].id + 1) if folders else 1
        path = root / f"{next_id:04d}-{name}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return WorkflowFolder(path)


def read_json(path: Path, default: Any) -> Any:
    return _read(path, default, "workflow state")


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

    def phase(self, name: str) -> dict[str, Any]:
        return self.entry("phases", name)

    def set_phase(self, name: str, **values: Any) -> None:
        self.update_entry("phases", name, **values)
