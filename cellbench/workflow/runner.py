"""Run a workflow: plan it, then run each phase's command as its own process, gate it, record it.

Each phase is ``python -m cellbench.cli.trial <command>``: the same launcher a sweep uses for
its trials (``cellbench.sweep.local.trial_command``). A process per phase hands GPU memory back
between phases (an extraction's backbone does not sit beside a decoder's training), a crash or
an out-of-memory kill takes only that phase down with its exit code recorded, the command's own
signal handling runs unchanged (``train`` checkpoints and ends ``interrupted``), and the
launcher's parent-death signal makes a phase
checkpoint and stop when the workflow itself is killed — so a SIGKILLed workflow leaves no
orphan, and a rerun resumes the phase through the command's own resume. The price is an
interpreter start (and a torch import) per phase: a second or two.

Ctrl-C or SIGTERM: forwarded to the running phase as one SIGINT (a second one kills it), the
phase is recorded ``interrupted``, the workflow exits 130; run it again to resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule

from cellbench.errors import CellbenchError, CheckFailed, RunConflict
from cellbench.runs.lock import RunLock
from cellbench.runs.store import RUNS_DIR_ENV, RunStore
from cellbench.sweep.local import PARENT_ENV, trial_command
from cellbench.workflow import commands, progress
from cellbench.workflow.gates import GateResult, evaluate, gate_files
from cellbench.workflow.plan import Step, make_plan
from cellbench.workflow.spec import PhaseSpec, WorkflowSpec
from cellbench.workflow.state import (
    WorkflowFolder,
    WorkflowState,
    create_workflow,
    newest_named,
)

INTERRUPTED_CODES = (130, 143, 129, -2, -15, -1)
TICK_S = 2.0  # how often a running phase's progress and ETA are read


class GateFailed(CheckFailed):
    """A gate's value is outside its range (exit 1): the workflow stops there."""


class PhaseFailed(CellbenchError):
    """A phase's command failed: the workflow stops with that command's exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code if 1 <= code <= 4 else 1


@dataclass
class WorkflowOptions:
    from_phase: str | None = None
    only: str | None = None
    fresh: bool = False
    dry_run: bool = False
    backend: str | None = None  # passed to sweep phases
    quiet_stdout: bool = False  # --json: phases print on stderr, stdout stays JSON


def open_workflow(spec: WorkflowSpec, root: Path) -> WorkflowFolder | None:
    """The newest folder of this workflow's name (a rerun resumes it), None for a new one."""
    return newest_named(root, spec.name)


def refuse_conflicts(steps: list[Step]) -> None:
    """The first refusal in a plan (a train phase on a run this workflow did not make), exit 4:
    raised before anything runs, is recorded, or a workflow folder is made."""
    refused = next((s.refused for s in steps if s.refused), None)
    if refused:
        raise RunConflict(refused)


class WorkflowRunner:
    def __init__(
        self,
        spec: WorkflowSpec,
        folder: WorkflowFolder | None,
        store: RunStore,
        sweeps_root: Path,
        options: WorkflowOptions,
        out: Console,
    ):
        self.spec = spec
        self.folder = folder
        self.store = store
        self.sweeps_root = Path(sweeps_root)
        self.options = options
        self.out = out
        self.state = WorkflowState(folder) if folder is not None and folder.root.is_dir() else None
        self.number = 0  # printed step number

    # ------------------------------------------------------------------ plan

    def plan(self) -> list[Step]:
        phases = (self.state.data["phases"] if self.state else {}) or {}
        o = self.options
        steps = make_plan(self.spec, phases, o.from_phase, o.only, o.fresh)
        for step in steps:
            self._preview_training(step)
        return steps

    def _preview_training(self, step: Step) -> None:
        """What a train phase that runs will do to its run, decided now so the plan shows it
        and nothing runs when it is refused: the clean of a run this workflow made, or the
        refusal of one it did not make."""
        name = commands.train_run_name(step.phase)
        if not step.runs or name is None:
            return
        try:
            inv = commands.invocation(
                step.phase, step.action, self.store, None, None, self.made_runs(), self.spec.name
            )
        except RunConflict as exc:
            step.refused = str(exc)
            step.why = f"refused: run {name} exists and was not made by this workflow"
            return
        step.before = [argv for _, argv in inv.before]
        if inv.before:
            step.why += f"; cleans run {name} first (made by this workflow)"
        elif inv.note:
            step.why += f"; {inv.note}"

    def made_runs(self) -> set[str]:
        """The run folders this workflow's phases created, the only ones it cleans or resumes.
        A state written before they were recorded: the run folders its train phases listed
        among their outputs (a train phase lists its run once it trained it)."""
        if self.state is None:
            return set()
        made = self.state.made_runs()
        for phase in self.spec.phases:
            if commands.train_run_name(phase):
                made |= {Path(o).name for o in self.state.phase(phase.name).get("outputs") or []}
        return made

    def _remember_run(self, phase: PhaseSpec) -> None:
        """After a train phase ran (or was stopped): its run is this workflow's. The phase was
        refused unless the run was absent, empty or already this workflow's."""
        name = commands.train_run_name(phase)
        run = self.store.find(name) if name else None
        if run is not None:
            self.state.add_made_run(run.root.name)

    # ------------------------------------------------------------------ run

    def use_folder(self, folder: WorkflowFolder) -> None:
        """The (new) folder this workflow runs in."""
        self.folder = folder
        self.state = WorkflowState(folder)

    def run(self, steps: list[Step] | None = None) -> dict[str, Any]:
        steps = self.plan() if steps is None else steps  # a bad --from/--only changes nothing
        assert self.folder is not None and self.state is not None
        refuse_conflicts(steps)
        with RunLock(self.folder.lock):
            self.state = WorkflowState(self.folder)  # re-read under the lock
            self.folder.write_spec(self.spec.to_dict())
            self.state.set(
                status="running",
                name=self.spec.name,
                source=self.spec.source,
                params=self.spec.params,
                phase_order=self.spec.names(),
                started=time.time(),
                ended=None,
                stopped_at=None,
            )
            self.folder.append_log(f"workflow {self.spec.name} started ({self.spec.source})")
            try:
                for step in steps:
                    self._step(step)
            except KeyboardInterrupt:
                self.state.set(status="interrupted", ended=time.time())
                self.folder.append_log("workflow interrupted")
                raise
            except GateFailed as exc:
                self.state.set(status="gate_failed", ended=time.time(), reason=str(exc))
                self.folder.append_log(f"workflow stopped: {exc}")
                raise
            except CellbenchError as exc:
                self.state.set(status="failed", ended=time.time(), reason=str(exc))
                self.folder.append_log(f"workflow stopped: {exc}")
                raise
            phases = self.state.data["phases"]
            whole = all((phases.get(n) or {}).get("status") == "done" for n in self.spec.names())
            # --only/--from may leave phases never run: "incomplete" until every one is done
            status = "completed" if whole else "incomplete"
            self.state.set(status=status, ended=time.time(), reason=None)
            self.folder.append_log(f"workflow {status}")
        return self.state.data

    def _step(self, step: Step) -> None:
        phase = step.phase
        if step.action == "skip":
            self.out.print(f"[dim]· {phase.name}: skipped ({escape(step.why)})[/]", highlight=False)
            return
        if step.action == "check":
            self._gate(step, self.state.phase(phase.name))
            return
        if step.action == "clean":
            self._refuse_cleanup_unless_all_gates_passed(phase)
        self._run_phase(step)

    def _refuse_cleanup_unless_all_gates_passed(self, phase: PhaseSpec) -> None:
        for other in self.spec.phases:
            if other.name == phase.name:
                return
            rec = self.state.phase(other.name)
            failed = [g["name"] for g in rec.get("gates") or [] if not g.get("ok")]
            if rec.get("status") != "done" or failed:
                raise GateFailed(
                    f"cleanup {phase.name} refused: phase {other.name} is "
                    f"{rec.get('status', 'pending')}"
                    + (f" with failed gates {', '.join(failed)}" if failed else "")
                    + "; cleanup runs only after every gate passed"
                )

    def _print_command(self, title: str, argv: list[str]) -> None:
        self.number += 1
        self.out.print(Rule(f"[bold]{self.number}. {escape(title)}", align="left"))
        line = "$ cellbench " + " ".join(argv)
        self.out.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)

    def _run_phase(self, step: Step) -> None:
        phase = step.phase
        rec = self.state.phase(phase.name)
        generation = int(rec.get("sweep_generation") or 0)
        if phase.is_sweep and (step.action != "resume" or not generation):
            generation += 1
        sweep = commands.sweep_name(self.folder.name, self.folder.id, phase, generation)
        inv = commands.invocation(
            phase,
            step.action,
            self.store,
            sweep if phase.is_sweep else None,
            self.options.backend,
            self.made_runs(),
            self.spec.name,
        )
        started = time.time()
        self.state.set_phase(
            phase.name,
            status="running",
            fingerprint=step.fingerprint,
            gates_fingerprint=step.gates_fingerprint,
            argv=phase.argv,
            command=phase.display(),
            started=started,
            ended=None,
            exit_code=None,
            gates=[],
            attempts=int(rec.get("attempts") or 0) + 1,
            sweep_generation=generation if phase.is_sweep else None,
            progress=None,
            eta_s=step.eta_s,
        )
        self.folder.append_log(f"phase {phase.name} {step.action} ({step.why})")
        for title, argv in inv.before:
            self._print_command(title, argv)
            code = self._execute(phase, argv, None, started, None)
            self.folder.append_log(f"phase {phase.name}: {' '.join(argv)} exited {code}")
            self._stop_on_code(phase, code, started)
        self._print_command(phase.title, inv.argv or phase.argv)
        absent = phase.only_if_exists and not Path(phase.only_if_exists).expanduser().exists()
        if absent:
            inv.argv, inv.note = None, f"{phase.only_if_exists} absent: nothing to do"
        if inv.argv is None:
            code = 0
            self.out.print(f"[dim]({escape(inv.note)})[/]")
        else:
            output = self.folder.output_file(phase.name) if phase.json or phase.is_cleanup else None
            sweep_dir = self.sweeps_root / sweep if phase.is_sweep else None
            try:
                code = self._execute(phase, inv.argv, output, started, sweep_dir)
            finally:  # interrupted too: a rerun resumes the run it made
                self._remember_run(phase)
        self.folder.append_log(f"phase {phase.name} exited {code}")
        if code in INTERRUPTED_CODES:
            self.state.set_phase(
                phase.name, status="interrupted", exit_code=code, ended=time.time()
            )
            raise KeyboardInterrupt
        results = self._gate(step, {"exit_code": code}, raise_on_failure=False)
        # a command that failed before writing what a gate reads: its exit code says more
        failed = [r for r in results if not r.ok and not (code and r.problem)]
        if failed:
            self._stop_on_gate(phase, failed[0])
        self._stop_on_code(phase, code, started)
        ended = time.time()
        self.state.set_phase(
            phase.name,
            status="done",
            exit_code=code,
            ended=ended,
            duration_s=ended - started,
            last_duration_s=ended - started,
            outputs=self._outputs(phase, sweep if phase.is_sweep else None),
            eta_s=0.0,
        )
        if phase.is_cleanup and not absent:
            self._record_cleanup(phase)
        self.out.print(f"[dim]({ended - started:.1f} s)[/]")

    def _stop_on_code(self, phase: PhaseSpec, code: int, started: float) -> None:
        if code == 0:
            return
        self.state.set_phase(phase.name, status="failed", exit_code=code, ended=time.time())
        raise PhaseFailed(
            f"workflow {self.spec.name} stopped at phase {phase.name} ({phase.title}): its "
            f"command exited {code}; later phases not run, nothing cleaned (log: "
            f"{self.folder.log})",
            code,
        )

    def _stop_on_gate(self, phase: PhaseSpec, result: GateResult) -> None:
        self.state.set_phase(phase.name, status="gate_failed", ended=time.time())
        self.state.set(stopped_at={"phase": phase.name, "gate": result.to_dict()})
        value = result.value if not isinstance(result.value, float) else f"{result.value:.4g}"
        why = f": {result.diagnosis}" if result.diagnosis else ""
        problem = f" ({result.problem})" if result.problem else ""
        raise GateFailed(
            f"gate {result.name} of phase {phase.name} failed: {value}{problem}, expected "
            f"{result.expected} ({result.source}){why}; later phases not run, nothing cleaned"
        )

    # ------------------------------------------------------------------ gates and records

    def _gate(
        self, step: Step, rec: dict[str, Any], raise_on_failure: bool = True
    ) -> list[GateResult]:
        phase = step.phase
        results = []
        for gate in phase.gates:
            runs: list[Path] = []
            if gate.run is not None:
                run = self.store.find(gate.run)
                runs = [run.root] if run is not None else []
            elif gate.trials:
                entry = self.state.phase(phase.name)
                generation = int(entry.get("sweep_generation") or 1)
                sweep = commands.sweep_name(self.folder.name, self.folder.id, phase, generation)
                runs = commands.trial_runs(self.sweeps_root, sweep, self.store)
            files = gate_files(gate, self.folder.output_file(phase.name), runs)
            result = evaluate(gate, files)
            results.append(result)
            colour = "green" if result.ok else "bold red"
            mark = "ok" if result.ok else "FAILED"
            self.out.print(f"[{colour}]{mark}[/] {escape(result.line())}", highlight=False)
            self.folder.append_log(f"phase {phase.name} {result.line()} -> {mark}")
        self.state.set_phase(
            phase.name,
            gates=[r.to_dict() for r in results],
            gates_fingerprint=step.gates_fingerprint,
        )
        failed = [r for r in results if not r.ok]
        if failed and raise_on_failure:
            self._stop_on_gate(phase, failed[0])
        return results

    def _outputs(self, phase: PhaseSpec, sweep: str | None) -> list[str]:
        outputs = list(phase.outputs)
        name = commands.train_run_name(phase)
        run = self.store.find(name) if name else None
        if run is not None:
            outputs.append(str(run.root))
        if sweep is not None:
            outputs.append(str(self.sweeps_root / sweep))
        if phase.json and self.folder.output_file(phase.name).is_file():
            outputs.append(str(self.folder.output_file(phase.name)))
        return outputs

    def _record_cleanup(self, phase: PhaseSpec) -> None:
        import json

        try:
            report = json.loads(self.folder.output_file(phase.name).read_text())
        except (OSError, ValueError):
            report = {}
        freed = int(report.get("bytes_freed") or 0)
        removed = [r.get("path") for r in report.get("removed") or [] if isinstance(r, dict)]
        self.state.set_phase(phase.name, bytes_freed=freed, removed=removed)
        self.out.print(f"cleanup {phase.name}: freed {_bytes(freed)} ({len(removed)} item(s))")
        self.folder.append_log(f"phase {phase.name} freed {freed} bytes")

    # ------------------------------------------------------------------ processes

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[RUNS_DIR_ENV] = str(self.store.root.resolve())
        env["CELLBENCH_SWEEPS_DIR"] = str(self.sweeps_root.resolve())
        env[PARENT_ENV] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _execute(
        self,
        phase: PhaseSpec,
        argv: list[str],
        output: Path | None,
        started: float,
        sweep_dir: Path | None,
    ) -> int:
        """Run one cellbench command; its stdout goes to ``output`` (a JSON phase) or to the
        terminal (stderr under ``--json``); progress and ETA are read every few seconds."""
        command = trial_command(argv)
        sink: Any = None
        tmp = None
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = output.with_name(f".{output.name}.partial")
            sink = open(tmp, "wb")  # noqa: SIM115 (closed below, after the process ends)
        elif self.options.quiet_stdout:
            sink = 2  # the phase's stdout joins our stderr
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C reaches it once, through us
                preexec_fn=_listen_to_sigint,
            )
            code = self._wait(proc, phase, started, sweep_dir)
        finally:
            if tmp is not None:
                sink.close()
        if tmp is not None and output is not None:
            os.replace(tmp, output)  # complete: gates read it even when the command exited 1
        return code

    def _wait(
        self, proc: subprocess.Popen, phase: PhaseSpec, started: float, sweep_dir: Path | None
    ) -> int:
        said_eta = False
        try:
            while True:
                try:
                    return proc.wait(timeout=TICK_S)
                except subprocess.TimeoutExpired:
                    said_eta = self._tick(phase, started, sweep_dir, said_eta)
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: stop it now
                proc.kill()
                proc.wait()
            self.state.set_phase(
                phase.name, status="interrupted", exit_code=proc.returncode, ended=time.time()
            )
            self.folder.append_log(f"phase {phase.name} interrupted")
            raise

    def _tick(self, phase: PhaseSpec, started: float, sweep_dir: Path | None, said: bool) -> bool:
        try:
            measured = progress.measure(phase, self.store, started, sweep_dir)
        except (OSError, ValueError, CellbenchError):
            return said
        if not measured:
            return said
        self.state.set_phase(phase.name, **measured)
        if not said and measured.get("eta_s") is not None:
            eta = measured["eta_s"]
            self.out.print(
                f"[dim]{phase.name}: {measured.get('rate', '')}, ETA {eta:.0f} s[/]",
                highlight=False,
            )
            return True
        return said


def _listen_to_sigint() -> None:
    """In the phase's process before it starts: SIGINT back to its default. A workflow started
    in the background by a non-interactive shell (``cellbench workflow run ... &``) inherits
    SIGINT ignored, and so would its phases — deaf to the one signal we stop them with."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def run_workflow(
    spec: WorkflowSpec,
    root: Path,
    store: RunStore,
    sweeps_root: Path,
    options: WorkflowOptions,
    out: Console,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[WorkflowRunner, dict[str, Any] | None]:
    """Plan (``dry_run``) or run ``spec`` in its folder under ``root``; the runner and the
    final state (None for a dry run)."""
    for name in (options.from_phase, options.only):
        if name is not None:
            spec.phase(name)  # a bad --from/--only exits 2 before any folder is made
    folder = open_workflow(spec, root)
    runner = WorkflowRunner(spec, folder, store, sweeps_root, options, out)
    if options.dry_run:
        return runner, None
    steps = runner.plan()
    refuse_conflicts(steps)  # a refused workflow leaves no folder behind
    if folder is None:
        runner.use_folder(create_workflow(root, spec.name))
    say(f"workflow [bold]{escape(spec.name)}[/] · {escape(str(runner.folder.root))}")
    return runner, runner.run(steps)
