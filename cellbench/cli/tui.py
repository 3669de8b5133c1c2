"""``cellbench tui``: the live view of runs (loss curves, memory, sanity-check warnings).

Textual is imported inside the command so that ``cellbench --help`` stays fast.
"""

from __future__ import annotations

import difflib
from typing import Annotated

import typer

from cellbench.cli.common import RunsDirOption, SweepsDirOption, run_store
from cellbench.errors import BadInputError


def tui_command(
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="Select this run at start: id (2), name, folder or path (opens its runs folder).",
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep the newest running run selected (key f).")
    ] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.1, help="Seconds between two reads of the run folders."),
    ] = 1.0,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="Open this sweep's view: leaderboard, trial states, phases."),
    ] = None,
    runs_dir: RunsDirOption = None,
    sweeps_dir: SweepsDirOption = None,
) -> None:
    """Watch and steer runs live: curves, stop/resume, compare, sweeps, GPUs, warnings.

    Reads the run folders only (events.jsonl, config.yaml), so it shows runs being trained by
    another process, on this machine or through SSH, and finished ones alike.
    Keys: q quit · ? help · m curve · l log scale · s stop · space mark · c compare ·
    w sweeps · g GPUs · f follow the newest running run.
    """
    store = run_store(runs_dir)
    root = store.root
    if run is not None:
        # the one run resolver, before the screen (a missing run: exit 3); a path to a run of
        # another runs folder opens that folder, with the run selected
        paths = store.resolve(run)
        root, run = paths.root.parent, paths.root.name
    if sweep is not None:
        from cellbench.sweep.store import default_sweeps_root
        from cellbench.tui.sweeps import sweep_names

        sweeps_root = sweeps_dir or default_sweeps_root(store.root)
        names = sweep_names(sweeps_root)
        if sweep not in names:
            close = difflib.get_close_matches(sweep, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"{sweeps_root}: no sweep '{sweep}'{hint}")
    from cellbench.tui.app import CellbenchTUI

    CellbenchTUI(
        root, run=run, interval=interval, follow=follow, sweep=sweep, sweeps_root=sweeps_dir
    ).run()
