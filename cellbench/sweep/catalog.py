"""What ``cellbench sweep`` with no argument lists: the sweep files one can start (the
workspace's, then the shipped ones) and the sweeps of the sweeps folder with their status and
the command that starts or resumes each. Reads YAML and JSON only."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellbench.sweep.spec import SWEEPS_PROFILE_DIR, sweep_file_dirs
from cellbench.sweep.store import FINISHED, SweepFolder


@dataclass
class SweepFile:
    name: str
    path: Path
    origin: str  # "workspace" or "shipped"
    about: str  # the file's first comment line

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path), "command": f"cellbench sweep {self.name}"}


def _first_comment(path: Path) -> str:
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("# ").strip()
            if line.strip():
                break
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def sweep_files() -> list[SweepFile]:
    """Every sweep file a name reaches; a workspace file hides a shipped one of its name."""
    seen: dict[str, SweepFile] = {}
    shipped = SWEEPS_PROFILE_DIR.resolve()
    for folder in sweep_file_dirs():
        origin = "shipped" if folder.resolve() == shipped else "workspace"
        for path in sorted(folder.glob("*.yaml")):
            seen.setdefault(path.stem, SweepFile(path.stem, path, origin, _first_comment(path)))
    return list(seen.values())


def _file_command(spec: dict[str, Any], name: str) -> str:
    """``cellbench sweep FILE`` with the --set and --name that make it this study again."""
    from cellbench.config import read_yaml
    from cellbench.errors import CellbenchError
    from cellbench.sweep.spec import _sets, find_sweep_file

    source = Path(str(spec.get("source")))
    try:  # a name when the name reaches this very file (shipped, or the workspace's)
        by_name = find_sweep_file(source.stem).resolve() == source.resolve()
    except CellbenchError:
        by_name = False
    words = ["cellbench", "sweep", source.stem if by_name else str(source)]
    try:
        data = read_yaml(source)
        own = _sets(data.get("set"), str(source))
        file_name = str(data.get("name") or source.stem)
    except CellbenchError:
        return f"(its sweep file {source} is gone)"
    for text in spec.get("sets") or []:
        if text not in own:
            words += ["--set", text]
    if name != file_name:
        words += ["--name", name]
    return shlex.join(words)


def _grid_command(spec: dict[str, Any], name: str) -> str:
    """The ``--profile/--grid`` command line that made a command-line sweep."""
    words = ["cellbench", "sweep"]
    if spec.get("profile"):
        words += ["--profile", str(spec["profile"])]
    for key, values in (spec.get("space") or {}).items():
        words += ["--grid", f"{key}={','.join(map(str, values))}"]
    for text in spec.get("sets") or []:
        words += ["--set", text]
    phase = (spec.get("phases") or [{}])[0]
    if phase.get("seeds"):
        words += ["--seeds", str(len(phase["seeds"]))]
    if phase.get("epochs"):
        words += ["--epochs", str(phase["epochs"])]
    return shlex.join([*words, "--name", name])


@dataclass
class SweepEntry:
    name: str
    status: str
    done: int
    total: int
    command: str  # to start or resume it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sweep_entries(root: Path) -> list[SweepEntry]:
    """The sweeps of ``root``: status (state.json), finished trials, the command to go on."""
    import json

    from cellbench.runs.lock import lock_holder_alive
    from cellbench.sweep.store import _read_json

    entries = []
    if not root.is_dir():
        return entries
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        sweep = SweepFolder(folder)
        if not sweep.exists():
            continue
        try:
            spec = sweep.read_spec()
            state = _read_json(sweep.state, {})
            trials = json.loads(sweep.trials.read_text()) if sweep.trials.is_file() else []
        except Exception:  # a damaged sweep folder is listed, not fatal
            entries.append(SweepEntry(folder.name, "damaged", 0, 0, f"ls {folder}"))
            continue
        status = str(state.get("status") or "created")
        if status == "running" and not lock_holder_alive(sweep.lock):
            status = "interrupted"  # its process died without saying so
        done = sum(1 for t in (state.get("trials") or {}).values() if t.get("status") in FINISHED)
        if spec.get("source") == "command line":
            command = _grid_command(spec, folder.name)
        else:
            command = _file_command(spec, folder.name)
        if status == "completed":
            command = f"cellbench sweep show {folder.name}"
        entries.append(SweepEntry(folder.name, status, done, len(trials), command))
    return entries
