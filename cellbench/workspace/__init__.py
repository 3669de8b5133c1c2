"""The workspace: a folder holding ``cellbench.yaml`` that names its folders (data, runs, sweeps,
workflows, profiles) and remembers defaults (docs/workspace.md).

Where a command's folders come from, first that applies: its flag (``--runs-dir``...), the
environment variable (``CELLBENCH_RUNS_DIR``, ``CELLBENCH_SWEEPS_DIR``, ``CELLBENCH_DATA_DIR``),
the workspace's ``paths.*``, then today's defaults relative to the current folder (``./runs``,
``./data``, ``sweeps/`` beside the runs folder).
"""

from __future__ import annotations

from pathlib import Path

from cellbench.workspace.file import (
    WORKSPACE_ENV,
    WORKSPACE_FILE,
    Workspace,
    current,
    find_workspace_file,
)

__all__ = [
    "WORKSPACE_ENV",
    "WORKSPACE_FILE",
    "Workspace",
    "current",
    "find_workspace_file",
    "workspace_folder",
]


def workspace_folder(name: str, fallback: str | Path) -> Path:
    """The workspace's ``paths.<name>`` folder, or ``fallback`` (relative to the current
    folder) when no workspace governs it."""
    ws = current()
    return ws.folder(name) if ws is not None else Path(fallback)
