"""Issue #21's done-when: a fresh workspace, `cellbench quickstart` in it, then the project's four
commands typed exactly as the README shows them, from a subfolder of the workspace:
`cellbench train --family digestive` trains on the quickstart's store, `cellbench sweep` lists,
`cellbench tui` shows the runs (under Textual's pilot), `cellbench clean --run 2` answered on a
terminal removes run 2's checkpoints.

The quickstart is the real one, reduced by its own options (20 tiles of 64 px, 1 epoch), and the
workspace's own profiles/nuclei-demo.yaml (a user profile over the shipped one of that name) trains
1 epoch so that the bare `train --family digestive` takes seconds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from cellbench.config import PROFILES_DIR
from tests.helpers_workspace import cellbench, cli_env

SMALL = ["--tiles", "20", "--tile-size", "64", "--epochs", "1"]
STORE = "data/quickstart/pannuke/features/vit-demo"


@pytest.mark.slow
def test_the_four_commands_work_as_typed_after_the_quickstart(workspaces_on, monkeypatch):
    ceiling = workspaces_on.parent
    made = cellbench(["init", "ws"], workspaces_on, ceiling)
    assert made.returncode == 0, made.stderr
    ws = workspaces_on / "ws"
    profile = yaml.safe_load((PROFILES_DIR / "nuclei-demo.yaml").read_text())
    profile["train"]["epochs"] = 1
    (ws / "profiles").mkdir()
    (ws / "profiles" / "nuclei-demo.yaml").write_text(yaml.safe_dump(profile))

    quick = cellbench(["quickstart", *SMALL], ws, ceiling, timeout=1200)
    assert quick.returncode == 0, quick.stdout[-3000:] + quick.stderr[-3000:]
    config = yaml.safe_load((ws / "cellbench.yaml").read_text())
    assert config["defaults"]["features"] == STORE
    assert config["defaults"]["data"] == "data/quickstart/pannuke"
    assert config["defaults"]["profiles"] == {
        "classify": None,
        "organ": "organ-demo",
        "nuclei": "nuclei-demo",
    }
    sub = ws / "notes" / "today"
    sub.mkdir(parents=True)

    # 1. cellbench train --family digestive
    trained = cellbench(["train", "--family", "digestive"], sub, ceiling)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "profile: nuclei-demo (workspace default for nuclei)" in trained.stderr
    assert f"features: {STORE} (workspace default)" in trained.stderr
    run = ws / "runs" / "0003-nuclei-digestive"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert os.path.realpath(saved["data"]["features"]) == str((ws / STORE).resolve())
    assert saved["data"]["family"] == "digestive" and saved["train"]["epochs"] == 1
    assert (run / "checkpoints" / "best.pt").is_file()
    assert not (sub / "runs").exists()  # the workspace's runs folder, not ./runs

    # 2. cellbench sweep: no default sweep, so the files and sweeps are listed (exit 0)
    listed = cellbench(["sweep"], sub, ceiling)
    assert listed.returncode == 0, listed.stderr
    assert "cellvit_families" in listed.stdout and "demo_phases" in listed.stdout
    assert f"No sweep in {ws / 'sweeps'} yet" in listed.stdout.replace("\n", "")

    # 3. cellbench tui, from the subfolder, shows the workspace's runs
    from cellbench.cli.app import app
    from cellbench.tui.app import CellbenchTUI
    from cellbench.tui.widgets.runs_table import RunsTable

    seen: dict = {}

    def headless(tui: CellbenchTUI) -> None:
        async def main():
            async with tui.run_test(size=(140, 40)) as pilot:
                await pilot.pause()
                table = pilot.app.query_one(RunsTable)
                seen["rows"] = [[c.plain.strip() for c in table.get_row(key)] for key in table.rows]

        asyncio.run(main())

    monkeypatch.chdir(sub)
    monkeypatch.setenv("CELLBENCH_CEILING_DIRECTORIES", str(ceiling))
    monkeypatch.setattr(CellbenchTUI, "run", headless)
    shown = CliRunner().invoke(app, ["tui"])
    assert shown.exit_code == 0, shown.output
    names = " ".join(" ".join(row) for row in seen["rows"])
    for name in ("quickstart-organ", "quickstart-digestive", "nuclei-digestive"):
        assert name in names

    # 4. cellbench clean --run 2, answered "y" on a terminal
    run2 = ws / "runs" / "0002-quickstart-digestive"
    assert list((run2 / "checkpoints").glob("*.pt"))
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellbench", "clean", "--run", "2"],
        cwd=sub,
        env=cli_env(ceiling),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    os.write(master, b"y\n")
    out, err = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 0, out + err
    assert "Remove" in out and "removed" in err
    assert not list((run2 / "checkpoints").glob("*.pt"))
    assert (ws / "runs" / "0001-quickstart-organ" / "checkpoints" / "best.pt").is_file()

    # and where am I: the store, its default mark, the runs
    status = cellbench(["status", "--json"], sub, ceiling)
    assert status.returncode == 0, status.stderr
    import json

    report = json.loads(status.stdout)
    assert report["workspace"] == str((ws / "cellbench.yaml").resolve())
    features = [s for s in report["stores"] if s["kind"] == "features"]
    assert [(s["path"], s["default"], s["stale"]) for s in features] == [(STORE, True, False)]
    assert report["runs"]["by_status"] == {"completed": 3}
