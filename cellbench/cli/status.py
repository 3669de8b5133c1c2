"""``cellbench status`` (and a bare ``cellbench``): where am I. Light imports only: it reads
files and NVML, never torch."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import JsonOption, console, format_bytes, format_duration, print_json


def status_command(json_out: JsonOption = False) -> None:
    from cellbench.workspace.status import gather

    status = gather()
    if json_out:
        print_json(status)
        return
    render(status)


# one line per paragraph: Rich help rewraps each paragraph whole
status_command.__doc__ = (
    "Where am I: workspace, stores, running runs, sweeps, disk, GPUs.\n\n"
    "The workspace and its folders, its stores (tiles, size, stale or not), the runs running and "
    "their progress, sweeps and workflows not finished, the disk clean could free, the GPUs and "
    "their memory. --json for scripts."
)


def render(s: dict[str, Any]) -> None:
    where = s["workspace"] or "none here or above (cellbench init makes one)"
    console.print(f"[bold]workspace[/] {escape(where)}", highlight=False)
    folders = " · ".join(f"{k} {escape(v)}" for k, v in s["folders"].items())
    console.print(f"[dim]{folders}[/]", highlight=False)
    for key, value in s["defaults"].items():
        console.print(f"  default {key}: {escape(str(value))}", highlight=False)
    for m in s["missing_defaults"]:
        console.print(
            f"  [red]{m['key']} {escape(m['path'])} no longer exists[/] "
            f"(cellbench config unset {m['key']})",
            highlight=False,
        )

    if s["stores"]:
        table = Table(title="Stores")
        for column in ("store", "kind", "tiles", "size", "state"):
            right = column in ("tiles", "size")
            table.add_column(column, justify="right" if right else "left", overflow="fold")
        for st in s["stores"]:
            state = f"[red]stale: {escape(st['problems'][0])}[/]" if st["stale"] else "[green]ok[/]"
            name = escape(st["path"]) + (" [bold](default)[/]" if st["default"] else "")
            table.add_row(name, st["kind"], str(st["tiles"]), format_bytes(st["bytes"]), state)
        console.print(table)
    else:
        console.print("no data or feature store (cellbench quickstart, or data prepare)")

    runs = s["runs"]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(runs["by_status"].items()))
    console.print(f"[bold]runs[/] {counts or 'none yet'}", highlight=False)
    for r in runs["running"]:
        total = r["epochs"] or "?"
        best = ""
        if r["best_value"] is not None:
            best = f" · best {r['best_metric']} {r['best_value']:.4g}"
        console.print(
            f"  [cyan]running[/] {escape(r['run'])}: epoch {r['epoch']}/{total}{best} · "
            f"{format_duration(r['duration_s'])} (cellbench tui --run {escape(r['run'])})",
            highlight=False,
        )
    for sw in s["sweeps"]:
        console.print(
            f"  sweep {escape(sw['name'])}: {sw['status']}, {sw['done']}/{sw['total']} trials "
            f"({escape(sw['command'])})",
            highlight=False,
        )
    for wf in s["workflows"]:
        phases = f", {wf['phases_done']}/{wf['phases']} phases" if wf.get("phases") else ""
        current = f", at {wf['current']}" if wf.get("current") else ""
        console.print(
            f"  workflow {escape(wf['workflow'])}: {wf['status']}{phases}{escape(current)}",
            highlight=False,
        )

    disk = s["disk"]
    console.print(
        f"[bold]disk[/] checkpoints {format_bytes(disk['checkpoints'])} (cellbench clean --run "
        f"RUN) · feature stores {format_bytes(disk['feature_stores'])} (clean --features TAG) "
        f"· data stores {format_bytes(disk['data_stores'])}",
        highlight=False,
    )
    if s["gpus"]:
        for g in s["gpus"]:
            console.print(
                f"[bold]gpu {g['index']}[/] {escape(g['name'])}: {format_bytes(g['used'])} of "
                f"{format_bytes(g['total'])} used",
                highlight=False,
            )
    else:
        console.print(f"[dim]{escape(s['gpu_note'] or 'no GPU')}[/]", highlight=False)
