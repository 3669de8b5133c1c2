"""Workspaces for the tests of #21. The suite runs with CELLBENCH_WORKSPACE=none (conftest.py);
these fixtures turn workspaces back on, with a ceiling at the test's tmp folder so nothing above
it (a stray /tmp/cellbench.yaml) is ever found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspaces_on(tmp_path, monkeypatch):
    monkeypatch.delenv("CELLBENCH_WORKSPACE", raising=False)
    for name in (
        "CELLBENCH_RUNS_DIR",
        "CELLBENCH_SWEEPS_DIR",
        "CELLBENCH_DATA_DIR",
        "CELLBENCH_WORKFLOWS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELLBENCH_CEILING_DIRECTORIES", str(tmp_path.resolve().parent))
    return tmp_path


def cli_env(ceiling: Path) -> dict[str, str]:
    """The environment of a `cellbench` subprocess: this checkout first, workspaces on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLBENCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CELLBENCH_CEILING_DIRECTORIES"] = str(ceiling)
    return env


def cellbench(args: list[str], cwd: Path, ceiling: Path, timeout: float = 600, **kw):
    """Run `cellbench ARGS` as a user types it, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "cellbench", *args],
        cwd=cwd,
        env=cli_env(ceiling),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
