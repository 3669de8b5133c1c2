"""``cellbench workflow run|show|list``: gated, resumable multi-phase studies.

Only light imports (the workflow package reads YAML/JSON and starts processes; torch is imported
by the phases, never here): ``cellbench --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cellbench.cli.common import (
    JsonOption,
    RunsDirOption,
    SweepsDirOption,
    console,
    err_console,
    format_bytes,
    format_duration,
    log_markup,
    print_json,
    run_store,
)
from cellbench.errors import BadInputError, UsageError

app = typer.Typer(
    help="Gated, resumable multi-phase studies (seeds/001 as a file): run, show, list.",
    no_args_is_help=True,
)

WorkflowsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--workflows-dir",
        envvar="CELLBENCH_WORKFLOWS_DIR",
        help="Folder holding the workflows (default: workflows/ beside the runs folder).",
        show_default=False,
    ),
]
ACTION_STYLE = {"run": "bold", "resume": "yellow", "skip": "dim", "check": "cyan", "clean": "red"}
STATUS_STYLE = {
    "done": "green",
    "completed": "green",
    "running": "cyan",
    "interrupted": "yellow",
    "damaged": "bold red",
}


def _roots(runs_dir: Path | None, sweeps_dir: Path | None, workflows_dir: Path | None):
    from cellbench.sweep.store import default_sweeps_root
    from cellbench.workflow.state import default_workflows_root

    store = run_store(runs_dir)
    return (
        store,
        sweeps_dir or default_sweeps_root(store.root),
        workflows_dir or default_workflows_root(store.root),
    )


@app.command("run")
def run_command(
    workflow: Annotated[
        str, typer.Argument(help="A workflow file, or a shipped one: demo, cellvit-optimus.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="A workflow parameter: --set tiles=20 (repeatable)."),
    ] = None,
    from_phase: Annotated[
        str | None, typer.Option("--from", help="Run this phase and every phase after it again.")
    ] = None,
    only: Annotated[str | None, typer.Option("--only", help="Run this phase only.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (run, resume, skip, clean); run nothing."),
    ] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Run every phase again; trainings start from nothing.")
    ] = False,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Sweep phases: local (default) or ray.")
    ] = None,
    runs_dir: RunsDirOption = None,
    sweeps_dir: SweepsDirOption = None,
    workflows_dir: WorkflowsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a workflow: each phase one cellbench command (or a sweep), gated on what it wrote.

    Running it again resumes at the first phase not done (an interrupted training resumes
    through train --resume); a phase whose command, inputs or needed phases changed runs again
    with everything downstream. A failed gate stops the workflow with the gate's value, its
    expected range and the diagnosis; cleanup phases run only after every gate passed.
    Exit codes: 0 done · 1 a gate failed (or a phase's check) · 2 bad usage · 3 bad workflow
    file or input · 4 the workflow is running elsewhere, or a train phase names a run it did
    not make · 130 interrupted (run it again to resume).
    """
    from cellbench.workflow.runner import WorkflowOptions, refuse_conflicts, run_workflow
    from cellbench.workflow.spec import load_workflow

    if from_phase and only:
        raise UsageError("--from and --only: give one of them")
    if backend not in (None, "local", "ray"):
        raise UsageError(f"--backend {backend}: use local or ray")
    spec = load_workflow(workflow, list(overrides or []))
    store, sweeps_root, root = _roots(runs_dir, sweeps_dir, workflows_dir)
    options = WorkflowOptions(
        from_phase=from_phase,
        only=only,
        fresh=fresh,
        dry_run=dry_run,
        backend=backend,
        quiet_stdout=json_output,
    )
    out = err_console if json_output else console
    runner, state = run_workflow(spec, root, store, sweeps_root, options, out, say=log_markup)
    if dry_run:
        steps = runner.plan()
        render_plan(spec.name, steps, out, runner.folder)
        if json_output:
            print_json({"workflow": spec.name, "plan": [s.to_dict() for s in steps]})
        refuse_conflicts(steps)  # the exit code and message the run would give
        return
    render_state(state, out)
    if json_output:
        print_json(state)


def render_plan(name: str, steps, out: Console, folder) -> None:
    where = str(folder.root) if folder is not None else "a new workflow folder"
    table = Table(title=escape(f"workflow {name} · plan ({where})"))
    wide = out.width >= 150  # the commands fit beside the plan; else --json has them
    columns = ("#", "phase", "action", "why", "last time") + (("command",) if wide else ())
    for column in columns:
        table.add_column(column, overflow="fold", justify="right" if column == "#" else "left")
    for i, step in enumerate(steps, start=1):
        style = ACTION_STYLE.get(step.action, "")
        table.add_row(
            str(i),
            step.phase.name,
            f"[{style}]{step.action}[/]",
            escape(step.why),
            format_duration(step.eta_s),
            *([escape(step.phase.display())] if wide else []),
        )
    out.print(table)
    todo = [s for s in steps if s.runs]
    known = [s.eta_s for s in todo if s.eta_s is not None]
    eta = f" · about {format_duration(sum(known))} by the last times" if known else ""
    out.print(f"{len(todo)} phase(s) to run, {len(steps) - len(todo)} skipped{eta}")


def _gates_cell(rec: dict[str, Any]) -> str:
    cells = []
    for g in rec.get("gates") or []:
        value = g.get("value")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        colour = "green" if g.get("ok") else "bold red"
        expected = escape(g.get("expected") or "?")
        cells.append(f"[{colour}]{escape(g['name'])} {escape(shown)}[/] ({expected})")
    if rec.get("bytes_freed") is not None:
        cells.append(f"freed {format_bytes(rec['bytes_freed'])}")
    return "\n".join(cells) or "-"


def render_state(state: dict[str, Any], out: Console) -> None:
    """The ``workflow show`` table: phases, status, time or ETA, gates, outputs."""
    phases = state.get("phases") or {}
    order = state.get("phase_order") or list(phases)
    status = state.get("status", "unknown")
    colour = STATUS_STYLE.get(status, "bold red" if "fail" in status else "yellow")
    title = f"workflow {state.get('id', '?')}-{state.get('name', '?')} · [{colour}]{status}[/]"
    table = Table(title=title)
    for column in ("phase", "status", "time", "gates", "outputs"):
        table.add_column(column, overflow="fold")
    for name in order:
        rec = phases.get(name) or {"status": "pending"}
        s = rec.get("status", "pending")
        if s == "running":
            shown = rec.get("progress") or ""
            if rec.get("eta_s") is not None:
                shown += f" · ETA {format_duration(rec['eta_s'])}"
            elapsed = time.time() - rec["started"] if rec.get("started") else None
            timing = f"{format_duration(elapsed)} {shown}".strip()
        else:
            timing = format_duration(rec.get("duration_s"))
        style = STATUS_STYLE.get(s, "bold red" if "fail" in s else "")
        table.add_row(
            escape(name),
            f"[{style}]{s}[/]" if style else s,
            escape(timing),
            _gates_cell(rec),
            escape("\n".join(rec.get("outputs") or [])) or "-",
        )
    out.print(table)
    if state.get("problem"):  # a damaged state.json: say what is wrong with it
        out.print(f"[bold red]{escape(str(state['problem']))}[/]", highlight=False)
    stopped = state.get("stopped_at")
    if stopped and status == "gate_failed":
        g = stopped["gate"]
        out.print(
            f"[bold red]stopped at {escape(stopped['phase'])}:[/] "
            + escape(g.get("diagnosis") or ""),
            highlight=False,
        )


@app.command("show")
def show_command(
    workflow: Annotated[
        str | None,
        typer.Argument(
            help="Workflow id, folder name or name (default: the newest).", show_default=False
        ),
    ] = None,
    runs_dir: RunsDirOption = None,
    workflows_dir: WorkflowsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """A workflow's phases: status, time (or progress and ETA while running), gates, outputs."""
    from cellbench.workflow import read_workflow_state
    from cellbench.workflow.state import find_workflow, workflow_folders

    _, _, root = _roots(runs_dir, None, workflows_dir)
    folders = workflow_folders(root)
    folder = find_workflow(root, workflow) if workflow else (folders[-1] if folders else None)
    if folder is None:
        known = ", ".join(f.root.name for f in folders) or "none"
        raise BadInputError(f"{root}: no workflow '{workflow or ''}' (workflows: {known})")
    state = read_workflow_state(folder.root)
    render_state(state, err_console if json_output else console)
    if json_output:
        print_json(state)


@app.command("list")
def list_command(
    runs_dir: RunsDirOption = None,
    workflows_dir: WorkflowsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Workflows in the workflows folder, and the shipped workflow files."""
    from cellbench.workflow import list_workflows
    from cellbench.workflow.spec import shipped_workflows

    _, _, root = _roots(runs_dir, None, workflows_dir)
    rows = list_workflows(root)
    if json_output:
        print_json({"workflows": rows, "shipped": shipped_workflows()})
        return
    table = Table(title=escape(f"workflows in {root}"))
    for column in ("id", "name", "status", "phases", "current", "failed gates"):
        table.add_column(column)
    for r in rows:
        s = r["status"]
        style = STATUS_STYLE.get(s, "bold red" if "fail" in s else "yellow")
        table.add_row(
            str(r["id"]),
            escape(r["name"]),
            f"[{style}]{s}[/]",
            f"{r['phases_done']}/{r['phases']}",
            escape(r["current"] or "-"),
            escape(", ".join(r["gates_failed"]) or "-"),
        )
    if rows:
        console.print(table)
    else:
        console.print(f"no workflow in {escape(str(root))} yet")
    console.print(f"shipped: {', '.join(shipped_workflows())} (cellbench workflow run NAME)")
