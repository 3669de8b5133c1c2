"""The sweep folder ``<sweeps root>/<name>/``: spec, resolved trials, state, leaderboard, logs.

The root is ``--sweeps-dir``, else ``$CELLBENCH_SWEEPS_DIR``, else the workspace's
``paths.sweeps``, else ``sweeps`` beside the runs root (``runs/`` -> ``sweeps/``). Every JSON/YAML
file is written atomically (``cellbench.atomic``): a kill at any moment leaves the previous
version or the new one.

``state.json`` says how the sweep and each trial stand::

    {"status": "running|interrupted|completed|failed", "backend": "local", "phases": {...},
     "trials": {"t001": {"status": "...", "run": "0007-...", "reason": "...", "exit_code": 0}}}

Trial statuses: pending · running · completed · failed · interrupted · pruned (stopped early by
ASHA on Ray) · skipped (its run was being written by another process; looked at again on the
next run). Several worker threads update one state: one lock serialises the writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellbench.atomic import atomic_write_json, atomic_write_text
from cellbench.errors import BadInputError
from cellbench.json_state import JsonState, read_json
from cellbench.sweep.trials import Trial

SWEEPS_DIR_ENV = "CELLBENCH_SWEEPS_DIR"
FINISHED = ("completed", "failed", "pruned")


def default_sweeps_root(runs_root: Path) -> Path:
    env = os.environ.get(SWEEPS_DIR_ENV)
    if env:
        return Path(env)
    from cellbench.workspace import current

    ws = current()
    return ws.folder("sweeps") if ws is not None else runs_root.parent / "sweeps"


def _read_json(path: Path, default: Any) -> Any:
    return read_json(path, default, "sweep file")


@dataclass
class SweepFolder:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def trials(self) -> Path:
        return self.root / "trials.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def leaderboard_json(self) -> Path:
        return self.root / "leaderboard.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def exists(self) -> bool:
        return self.spec.is_file()

    def read_spec(self) -> dict[str, Any]:
        try:
            return yaml.safe_load(self.spec.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadInputError(f"{self.spec}: unreadable sweep spec ({exc})") from exc

    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_text(self.spec, yaml.safe_dump(spec, sort_keys=False))

    def read_trials(self) -> list[Trial]:
        return [Trial.from_dict(t) for t in _read_json(self.trials, [])]

    def write_trials(self, trials: list[Trial]) -> None:
        atomic_write_json(self.trials, [t.to_dict() for t in trials])

    def log_path(self, trial: Trial) -> Path:
        return self.logs / f"{trial.id}-{trial.name}.log"


class SweepState(JsonState):
    """``state.json`` in memory, saved after every change (``cellbench.json_state``)."""

    def __init__(self, folder: SweepFolder):
        self.folder = folder
        super().__init__(
            folder.state,
            {"name": folder.name, "status": "created", "phases": {}, "trials": {}},
            "sweep file",
        )

    def trial(self, trial_id: str) -> dict[str, Any]:
        return self.entry("trials", trial_id)

    def set_trial(self, trial_id: str, **values: Any) -> None:
        self.update_entry("trials", trial_id, **values)

    def set_phase(self, phase: str, status: str) -> None:
        with self._lock:
            self.data["phases"][phase] = status
            self._save()
