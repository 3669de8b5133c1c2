"""What a phase runs now: its command, adjusted for a fresh start or a resume.

Three commands have a story of their own; every other command runs as written:

- ``train ... --run NAME``: only a run this workflow made (its state's ``made_runs``) is
  cleaned or resumed. Started afresh while such a run exists, the run is cleaned first
  (``clean --run NAME --all --yes``: the run keeps its id and name and retrains from nothing, as
  a user would do by hand); resumed, it continues through ``train --run NAME --resume`` when the
  run has a checkpoint, counts as done when the run completed (the workflow was killed between
  the run's end and its own record), and starts afresh otherwise. A trained run the workflow did
  not make (a training by hand, another workflow's) is refused (exit 4) before anything runs.
- ``sweep``: named by the workflow (``<workflow>-w<id>-<phase>-r<N>``, a new ``N`` for each
  fresh start, so a fresh sweep never inherits a finished one's trials); resumed, the same sweep
  runs again and continues its own trials. ``--backend`` of ``workflow run`` is passed through.
- ``clean``: a cleanup phase, run with ``--yes --json`` so what it freed is recorded.
"""

from __future__ import annotations

import glob
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cellbench.errors import RunConflict
from cellbench.runs.layout import RunPaths
from cellbench.runs.store import RunStore
from cellbench.workflow.spec import PhaseSpec


@dataclass
class Invocation:
    argv: list[str] | None  # None: nothing to run (the phase's run already completed)
    before: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, argv) first
    note: str = ""


def expand_globs(phase: PhaseSpec) -> list[str]:
    """``DIR/*.png`` -> the matching files, sorted, as a shell would (the phase's files exist
    only once the phases before it ran, so this happens at run time); no match: kept as is.
    Only a word with a ``*`` written in the file is a glob, and it is matched by its pattern
    (``PhaseSpec.globs``), in which what a parameter brought in is literal: a folder named
    ``tiles[1]`` is that folder, not ``tiles1``."""
    out: list[str] = []
    for index, token in enumerate(phase.argv):
        pattern = phase.globs.get(index)
        matches = sorted(glob.glob(pattern)) if pattern is not None else []
        out += matches or [token]
    return out


def option_value(argv: list[str], option: str) -> str | None:
    for i, token in enumerate(argv):
        if token == option and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return None


def train_run_name(phase: PhaseSpec) -> str | None:
    return option_value(phase.argv, "--run") if phase.command == "train" else None


def sweep_name(workflow: str, workflow_id: int, phase: PhaseSpec, generation: int) -> str:
    """``demo-w3-families-r1``: never ``0003-...`` (trial runs are named after their sweep, and
    a run name that starts like a run folder, ``<id>-``, would be read as one)."""
    return f"{workflow}-w{workflow_id}-{phase.name}-r{generation}"


def refuse_foreign_run(phase: PhaseSpec, run: RunPaths, workflow: str) -> None:
    """A run this workflow did not make is never cleaned or restarted by it: it may be a
    training done by hand, or another workflow's, with the user's own files in it."""
    name = train_run_name(phase)
    raise RunConflict(
        f"{run.root}: phase {phase.name} of workflow {workflow} trains run '{name}', which "
        "exists and was not made by this workflow; nothing ran. Give the phase another run "
        f"name, or empty that run yourself (cellbench clean --run {name} --all) and run the "
        "workflow again"
    )


def train_invocation(
    phase: PhaseSpec, store: RunStore, resume: bool, made: Collection[str], workflow: str
) -> Invocation:
    """``made``: the run folders this workflow's phases created (the only ones it cleans)."""
    from cellbench.engine.session import has_trained
    from cellbench.runs.summary import summarize

    name = train_run_name(phase)
    run = store.find(name) if name else None
    if run is None:
        return Invocation(list(phase.argv))
    if run.root.name not in made:
        if has_trained(run):
            refuse_foreign_run(phase, run, workflow)
        # emptied (cellbench clean --run NAME --all): nothing to lose, train starts in it
        return Invocation(list(phase.argv), note=f"train in the empty run {run.root.name}")
    clean = (f"Clean the previous {name} run", ["clean", "--run", name, "--all", "--yes"])
    if not resume:
        return Invocation(list(phase.argv), [clean])
    status = summarize(run).status
    if status == "completed":
        return Invocation(None, note=f"run {run.root.name} completed: nothing left to run")
    if status in ("interrupted", "crashed", "failed") and run.last_checkpoint.is_file():
        return Invocation(["train", "--run", name, "--resume"], note=f"resume {run.root.name}")
    return Invocation(list(phase.argv), [clean], note=f"restart ({status})")


def sweep_invocation(phase: PhaseSpec, name: str, backend: str | None) -> Invocation:
    argv = [*phase.argv, "--name", name]
    if backend and "--backend" not in phase.argv:
        argv += ["--backend", backend]
    return Invocation(argv)


def invocation(
    phase: PhaseSpec,
    action: str,
    store: RunStore,
    sweep: str | None,
    backend: str | None,
    made: Collection[str] = (),
    workflow: str = "",
) -> Invocation:
    if phase.command == "train" and train_run_name(phase):
        return train_invocation(phase, store, action == "resume", made, workflow)
    if phase.is_sweep and sweep is not None:
        return sweep_invocation(phase, sweep, backend)
    argv = expand_globs(phase)
    if phase.is_cleanup:
        argv += [a for a in ("--yes", "--json") if a not in argv]
    elif phase.json and "--json" not in argv:
        argv.append("--json")
    return Invocation(argv)


def trial_runs(sweeps_root: Path, sweep: str, store: RunStore) -> list[Path]:
    """The run folders of a sweep's trials (what ``trials: true`` gates read)."""
    from cellbench.sweep.store import SweepFolder

    folder = SweepFolder(Path(sweeps_root) / sweep)
    runs = []
    for trial in folder.read_trials():
        run = store.find(trial.name)
        if run is not None:
            runs.append(run.root)
    return runs
