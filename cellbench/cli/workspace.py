"""``cellbench init [DIR]`` and ``cellbench config show|set|unset``: make a workspace and read or
edit its ``cellbench.yaml`` (docs/workspace.md). Light imports only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import JsonOption, console, log, print_json
from cellbench.errors import BadInputError, RunConflict, UsageError

app = typer.Typer(
    help="Read and edit the workspace's cellbench.yaml (folders and defaults).",
    no_args_is_help=True,
)


def init_command(
    folder: Annotated[
        Path, typer.Argument(help="The workspace folder (made if missing).", show_default=False)
    ] = Path("."),
) -> None:
    from cellbench.atomic import atomic_write_text
    from cellbench.workspace.file import WORKSPACE_FILE, find_workspace_file, render_template

    target = folder / WORKSPACE_FILE
    if target.exists():
        raise RunConflict(f"{target}: already a workspace (cellbench config show)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        outer = find_workspace_file(folder.resolve().parent)
    except BadInputError:
        outer = None
    atomic_write_text(target, render_template())
    console.print(f"Workspace [bold]{escape(str(folder.resolve()))}[/] ({WORKSPACE_FILE} written).")
    if outer is not None:
        log(
            f"inside the workspace {escape(str(outer))}: below {escape(str(folder))} "
            "this one counts"
        )
    console.print(
        "Next: [bold]cellbench quickstart[/] (makes a store and sets the defaults), "
        "[bold]cellbench status[/], [bold]cellbench config show[/]."
    )


init_command.__doc__ = (
    "Make FOLDER (default: here) a workspace that remembers its folders and defaults.\n\n"
    "Writes FOLDER/cellbench.yaml: folders data/, runs/, sweeps/, workflows/, profiles/ and "
    "empty defaults. Every cellbench command run in FOLDER or below then uses them "
    "(docs/workspace.md). Exit 4 when FOLDER already is one."
)


def _workspace():
    from cellbench.workspace import current

    ws = current()
    if ws is None:
        raise UsageError("no workspace here or above (cellbench init makes one)")
    return ws


def _effective(ws) -> dict[str, Any]:
    """Every key with its value in the file and what commands use from here."""
    from cellbench.workspace.file import known_keys

    rows = {}
    for key in known_keys():
        if key == "version":
            continue
        value = ws.get(key)
        used = None
        if key.startswith("paths."):
            used = str(ws.folder(key.split(".", 1)[1]))
        elif value and key in ("defaults.data", "defaults.features"):
            used = str(ws.resolve(value))
        rows[key] = {"value": value, "path": used}
    return rows


@app.command("show")
def show_command(json_out: JsonOption = False) -> None:
    """Show the workspace file and every key: folders, default stores, sweep, profiles."""
    from cellbench.workspace import current

    ws = current()
    if ws is None:
        if json_out:
            print_json({"workspace": None})
        else:
            console.print("No workspace here or above: ./runs, ./data (cellbench init makes one).")
        return
    rows = _effective(ws)
    if json_out:
        print_json({"workspace": str(ws.file), "keys": rows})
        return
    table = Table(title=escape(f"workspace {ws.file}"))
    for column in ("key", "value", "from here"):
        table.add_column(column, overflow="fold")
    for key, row in rows.items():
        value = "-" if row["value"] is None else escape(str(row["value"]))
        table.add_row(key, value, escape(row["path"] or ""))
    console.print(table)


def _checked_value(ws, key: str, value: str) -> str:
    """``value`` as the file should hold it, refused when it names nothing usable."""
    if key.startswith("paths."):
        return ws.shown(value) if value.strip() else value
    if key == "defaults.data":
        from cellbench.data.store import is_store

        if not is_store(Path(value)):
            raise BadInputError(f"{value}: not a data store (cellbench data prepare makes one)")
        return ws.shown(value)
    if key == "defaults.features":
        from cellbench.features.store import read_manifest

        if not Path(value).is_dir() or read_manifest(Path(value) / "manifest.json") is None:
            raise BadInputError(
                f"{value}: not a feature store STORE/features/TAG (cellbench features extract)"
            )
        return ws.shown(value)
    if key == "defaults.sweep":
        from cellbench.sweep.spec import find_sweep_file

        found = find_sweep_file(value)  # exit 3 with a did-you-mean
        return value if found.stem == value else ws.shown(found)
    # defaults.profiles.<task>: a profile that exists and trains that task
    from cellbench.config import find_profile, load_config

    task = key.rsplit(".", 1)[1]
    path = find_profile(value)  # exit 2 with a did-you-mean
    got = load_config(profile=value).task
    if got != task:
        raise UsageError(f"{key}: profile {value} trains task {got}, not {task}")
    return value if path.stem == value and "/" not in value else ws.shown(path)


@app.command("set")
def set_command(
    key: Annotated[str, typer.Argument(help="A key, e.g. defaults.features or paths.runs.")],
    value: Annotated[str, typer.Argument(help="Its value (paths relative to here).")],
) -> None:
    """Set a key of cellbench.yaml, checked first.

    A store must be one, a profile must train its task. Exit 2: an unknown key or profile ·
    3: a path that is not a store.
    """
    from cellbench.workspace.file import check_key, edit

    ws = _workspace()
    check_key(key)
    stored = _checked_value(ws, key, value)
    changed = edit(ws.file, key, stored)
    log(f"{key} = {escape(stored)}{'' if changed else ' (unchanged)'} · {escape(str(ws.file))}")


@app.command("unset")
def unset_command(
    key: Annotated[str, typer.Argument(help="A key, e.g. defaults.features.")],
) -> None:
    """Empty a default (a path key goes back to its usual folder name)."""
    from cellbench.workspace.file import PATH_DEFAULTS, check_key, edit

    ws = _workspace()
    check_key(key)
    value = PATH_DEFAULTS[key.split(".", 1)[1]] if key.startswith("paths.") else None
    edit(ws.file, key, value)
    shown = value if value is not None else "(empty)"
    log(f"{key} = {shown} · {escape(str(ws.file))}")
