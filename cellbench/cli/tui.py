"""``cellbench tui``: the live view of runs (loss curves, memory, sanity-check warnings).

Textual is imported inside the command so that ``cellbench --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cellbench.cli.common import RunsDirOption, run_store


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
    runs_dir: RunsDirOption = None,
) -> None:
    """Watch runs live: loss curves, GPU/CPU memory and sanity-check warnings.

    Reads the run folders only (events.jsonl, config.yaml), so it shows runs being trained by
    another process, on this machine or through SSH, and finished ones alike.
    Keys: q quit · r refresh · ↑/↓ j/k select · f follow the newest running run · ? help.
    """
    store = run_store(runs_dir)
    root = store.root
    if run is not None:
        # the one run resolver, before the screen (a missing run: exit 3); a path to a run of
        # another runs folder opens that folder, with the run selected
        paths = store.resolve(run)
        root, run = paths.root.parent, paths.root.name
    from cellbench.tui.app import CellbenchTUI

    CellbenchTUI(root, run=run, interval=interval, follow=follow).run()
