"""Workflow files: parameters, phases (one cellbench command each), their needs and gates.

A workflow file (YAML; shipped ones in ``cellbench/profiles/workflows/``)::

    name: demo
    description: seeds/001 on generated data
    params:                        # every ${name} below; --set name=value overrides one
      data: data/quickstart
      tiles: 160
    phases:
      - name: synth                # letters, digits, '_' or '-'
        title: Generate PanNuke-like raw folds
        command: data synth --out ${data}/pannuke-raw --tiles ${tiles} --force
        outputs: [${data}/pannuke-raw]
      - name: features-check
        needs: [extract]           # default: the phase before (the first needs nothing)
        command: features check ${data}/pannuke/features/vit-demo
        json: true                 # add --json; stdout saved as outputs/<phase>.json
        gates:
          - name: cls_std
            output: true           # read the phase's JSON output ...
            key: folds.*.cls_std   # ... at this key ('*': every entry must pass)
            min: 0.5
            max: 1.5
            diagnosis: "CLS std 0.28: the final norm is missing"

Phase keys: ``name``, ``title``, ``command`` (a cellbench command line without ``cellbench``),
``needs``, ``inputs`` (files or folders from outside the workflow whose change reruns the phase),
``outputs`` (shown by ``workflow show``), ``json``, ``gates``, ``only_if_exists`` (a path: when
it is absent the phase has nothing to do and counts as done — a cleanup whose target is gone).
A ``clean`` command is a cleanup phase: it runs only when every gate before it passed. A
``sweep`` command is a sweep phase (its trials' runs can be gated with ``trials: true``).

Gate keys: ``name``, where the value is read (``output: true``; ``file: PATH`` — a glob allowed,
every match must pass; ``run: NAME`` with ``file`` relative to the run folder, default
``metrics.json``; ``trials: true`` for every trial run of a sweep phase), ``key`` (dotted, ``*``
for every entry), the expectation (``min``, ``max``, ``equals``) and ``diagnosis``.

A problem in a file exits 3 with one line naming the file and the key; a bad ``--set`` exits 2.
"""

from __future__ import annotations

import difflib
import glob
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.config import PROFILES_DIR, read_yaml
from cellbench.errors import BadInputError, UsageError

WORKFLOWS_PROFILE_DIR = PROFILES_DIR / "workflows"
PHASE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
PARAM_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_KEYS = ("name", "description", "params", "phases")
_PHASE_KEYS = (
    "name",
    "title",
    "command",
    "needs",
    "inputs",
    "outputs",
    "json",
    "gates",
    "only_if_exists",
)
_GATE_KEYS = (
    "name",
    "output",
    "file",
    "run",
    "trials",
    "key",
    "min",
    "max",
    "equals",
    "diagnosis",
)


@dataclass
class GateSpec:
    name: str
    key: str
    output: bool = False
    file: str | None = None
    run: str | None = None
    trials: bool = False
    min: float | None = None
    max: float | None = None
    equals: Any = None
    diagnosis: str = ""

    def expected(self) -> str:
        """The expectation as people read it: ``0.70 .. 0.90``, ``>= 0.99``, ``== float32``."""
        if self.equals is not None:
            return f"== {self.equals}"
        if self.min is not None and self.max is not None:
            return f"{self.min:g} .. {self.max:g}"
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


@dataclass
class PhaseSpec:
    name: str
    title: str
    argv: list[str]  # the cellbench arguments, parameters substituted
    needs: list[str]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    json: bool = False
    gates: list[GateSpec] = field(default_factory=list)
    only_if_exists: str | None = None  # absent: the phase has nothing to do (a cleanup target)
    # argv index -> glob pattern, for the words with a '*' written in the file; in a pattern,
    # what a parameter brought in is escaped (glob.escape): a value's '[1]' is no wildcard
    globs: dict[int, str] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""

    @property
    def is_cleanup(self) -> bool:
        return self.command == "clean"

    @property
    def is_sweep(self) -> bool:
        return self.command == "sweep"

    def display(self) -> str:
        return "cellbench " + " ".join(shlex.quote(a) for a in self.argv)


@dataclass
class WorkflowSpec:
    name: str
    description: str
    params: dict[str, Any]  # resolved: file defaults < --set
    phases: list[PhaseSpec]
    source: str

    def phase(self, name: str) -> PhaseSpec:
        for phase in self.phases:
            if phase.name == name:
                return phase
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(
            f"phase '{name}': not a phase of workflow {self.name}{hint}; "
            f"phases: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        return [p.name for p in self.phases]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shipped_workflows() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS_PROFILE_DIR.glob("*.yaml"))


def find_workflow_file(ref: str) -> Path:
    """A workflow file by path, or a shipped one by name (``demo``, ``cellvit-optimus``)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = WORKFLOWS_PROFILE_DIR / f"{ref}.yaml"
    if path.suffix not in (".yaml", ".yml") and shipped.is_file():
        return shipped
    names = shipped_workflows()
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise BadInputError(f"{ref}: no such workflow file{hint}; shipped: {', '.join(names)}")


def parse_sets(texts: list[str], params: dict[str, Any], source: str) -> dict[str, Any]:
    """``--set name=value`` on the workflow's parameters; the value is read as YAML
    (``3`` an int, ``null`` none), a parameter the file does not declare exits 2."""
    out = dict(params)
    for text in texts:
        if "=" not in text:
            raise UsageError(f"--set {text}: expected NAME=VALUE, e.g. --set tiles=20")
        key, raw = (part.strip() for part in text.split("=", 1))
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(
                f"--set {text}: {source} has no parameter '{key}'{hint}; "
                f"parameters: {', '.join(params) or 'none'}"
            )
        if "\0" in raw:  # no command word can hold one (a phase would fail half-started)
            raise UsageError(f"--set {key}=...: a value cannot hold a NUL byte")
        try:
            out[key] = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def _refuse_nul(data: Any, where: str, key: str = "") -> None:
    """A NUL byte (``"a\\0b"`` in YAML) anywhere in the file: no command word or path can hold
    one, and the phase would fail as it starts, so the file is refused before anything runs."""
    if isinstance(data, str) and "\0" in data:
        raise BadInputError(f"{where}: {key or 'the file'}: holds a NUL byte")
    if isinstance(data, dict):
        for k, value in data.items():
            _refuse_nul(value, where, f"{key}.{k}" if key else str(k))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_nul(value, where, f"{key}[{i}]")


def substitute(
    text: str, params: dict[str, Any], where: str, quote: Callable[[str], str] = str
) -> str:
    """``text`` with every ``${name}`` replaced by its value, passed through ``quote``
    (``glob.escape`` for a glob pattern)."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in params:
            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"{where}: unknown parameter ${{{name}}}{hint}")
        v = params[name]
        if v is None:
            # a required parameter (null in the file) the command line did not give: usage
            raise UsageError(f"{where}: parameter '{name}' has no value; give --set {name}=...")
        return quote(str(v).lower() if isinstance(v, bool) else str(v))

    return PARAM_RE.sub(value, text)


def glob_pattern(token: str, params: dict[str, Any], where: str) -> str | None:
    """The glob a command word stands for, or None when it is no glob: only a ``*`` written
    in the file makes one, and the parameters' values in it are literal."""
    if "*" not in PARAM_RE.sub("", token):
        return None
    return substitute(token, params, where, quote=glob.escape)


def load_workflow(ref: str, sets: list[str] | None = None) -> WorkflowSpec:
    path = find_workflow_file(ref)
    data = read_yaml(path)  # malformed YAML: exit 3 naming the file and line
    where = str(path)
    _check_keys(data, _TOP_KEYS, where)
    _refuse_nul(data, where)
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise BadInputError(f"{where}: params: expected a mapping of names to default values")
    for key in raw_params:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BadInputError(f"{where}: params: '{key}' is not a valid name (letters, _)")
    params = parse_sets(list(sets or []), dict(raw_params), where)
    given = {text.split("=", 1)[0].strip() for text in sets or []}  # parse_sets checked them
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise BadInputError(f"{where}: phases: expected a non-empty list of phases")
    phases: list[PhaseSpec] = []
    for index, raw in enumerate(raw_phases):
        phases.append(_phase(raw, index, where, params, [p.name for p in phases], given))
    name = str(data.get("name") or path.stem)
    if not PHASE_NAME_RE.fullmatch(name):
        raise BadInputError(f"{where}: name: '{name}' (letters, digits, '_' or '-')")
    return WorkflowSpec(
        name=name,
        description=str(data.get("description") or "").strip(),
        params=params,
        phases=phases,
        source=str(path.resolve()),
    )


def _check_keys(data: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: expected a mapping")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"{where}: unknown key '{key}'{hint}; known: {', '.join(allowed)}")


def _strings(value: Any, where: str, params: dict[str, Any]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInputError(f"{where}: expected a list of strings")
    return [substitute(v, params, where) for v in value]


def _phase(
    raw: Any, index: int, where: str, params: dict[str, Any], before: list[str], given: set[str]
) -> PhaseSpec:
    _check_keys(raw, _PHASE_KEYS, f"{where}: phases[{index}]")
    name = str(raw.get("name") or "")
    if not PHASE_NAME_RE.fullmatch(name):
        raise BadInputError(
            f"{where}: phases[{index}].name: '{name}' (letters, digits, '_' or '-')"
        )
    here = f"{where}: phase {name}"
    if name in before:
        raise BadInputError(f"{here}: two phases share this name")
    command = raw.get("command")
    if not isinstance(command, str) or not command.strip():
        raise BadInputError(f"{here}: command: expected a cellbench command line")
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        raise BadInputError(f"{here}: command: {exc}") from exc
    if tokens and tokens[0] == "cellbench":
        tokens = tokens[1:]
    argv = [substitute(t, params, f"{here}: command") for t in tokens]
    if not argv:
        raise BadInputError(f"{here}: command: empty")
    globs = {i: glob_pattern(t, params, f"{here}: command") for i, t in enumerate(tokens)}
    needs = raw.get("needs", [before[-1]] if before else [])
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list):
        raise BadInputError(f"{here}: needs: expected a list of earlier phases")
    for need in needs:
        if need not in before:
            raise BadInputError(
                f"{here}: needs: '{need}' is not an earlier phase ({', '.join(before) or 'none'})"
            )
    gates_raw = raw.get("gates") or []
    if not isinstance(gates_raw, list):
        raise BadInputError(f"{here}: gates: expected a list")
    is_json = raw.get("json", False)
    if not isinstance(is_json, bool):
        raise BadInputError(f"{here}: json: expected true or false")
    phase = PhaseSpec(
        name=name,
        title=substitute(str(raw.get("title") or name), params, f"{here}: title"),
        argv=argv,
        needs=list(needs),
        inputs=_strings(raw.get("inputs"), f"{here}: inputs", params),
        outputs=_strings(raw.get("outputs"), f"{here}: outputs", params),
        json=is_json,
        globs={i: pattern for i, pattern in globs.items() if pattern is not None},
    )
    if raw.get("only_if_exists") is not None:
        phase.only_if_exists = substitute(
            str(raw["only_if_exists"]), params, f"{here}: only_if_exists"
        )
    phase.gates = [_gate(g, i, here, params, phase, given) for i, g in enumerate(gates_raw)]
    return phase


def _number(value: Any) -> float | None:
    """A gate threshold as a finite float (None: not given); ValueError saying why not. Text
    that float() reads counts: YAML 1.1 reads ``1e-3`` as a string. NaN or inf would pass or
    fail every value, so neither is a threshold."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # as YAML reads an empty value: no bound
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _bound(raw: dict, key: str, where: str, gate: str, params: dict, given: set[str]) -> Any:
    """``min``/``max`` of a gate: a number, or text with ``${parameters}``. A bad value that
    came from ``--set`` is a usage error naming ``--set`` (exit 2), not the file's fault:
    ``gate`` names the gate without the file."""
    value = raw.get(key)
    named = PARAM_RE.findall(value) if isinstance(value, str) else []
    text = substitute(value, params, f"{where}: {key}") if named else value
    try:
        return _number(text)
    except ValueError as exc:
        culprit = next((n for n in named if n in given), None)
        if culprit is not None:
            raise UsageError(f"--set {culprit}={params[culprit]}: {gate}: {key}: {exc}") from exc
        raise BadInputError(f"{where}: {key}: {exc}") from exc


def _gate(
    raw: Any, index: int, here: str, params: dict[str, Any], phase: PhaseSpec, given: set[str]
) -> GateSpec:
    _check_keys(raw, _GATE_KEYS, f"{here}: gates[{index}]")
    name = str(raw.get("name") or "")
    if not PHASE_NAME_RE.fullmatch(name):
        raise BadInputError(f"{here}: gates[{index}].name: '{name}' (letters, digits, '_', '-')")
    where = f"{here}: gate {name}"
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise BadInputError(f"{where}: key: expected a dotted key, e.g. best.metrics.val_np_dice")
    sources = [s for s in ("output", "file", "run", "trials") if raw.get(s)]
    if not sources or (
        len(sources) > 1 and set(sources) not in ({"run", "file"}, {"trials", "file"})
    ):
        raise BadInputError(
            f"{where}: say where the value is read: output: true, file: PATH, run: NAME "
            "(with an optional file), or trials: true (with an optional file)"
        )
    if raw.get("output") and not phase.json:
        raise BadInputError(f"{where}: output: true needs json: true on the phase")
    if raw.get("trials") and not phase.is_sweep:
        raise BadInputError(f"{where}: trials: true goes on a sweep phase")

    def text(k: str) -> str | None:
        v = raw.get(k)
        return None if v is None else substitute(str(v), params, f"{where}: {k}")

    # thresholds may be parameters too ("${min_dice}"): substituted, then read as numbers
    gate = f"phase {phase.name}: gate {name}"
    bounds = {k: _bound(raw, k, where, gate, params, given) for k in ("min", "max")}
    equals = raw.get("equals")
    if equals is None and bounds["min"] is None and bounds["max"] is None:
        raise BadInputError(f"{where}: give min, max or equals")
    return GateSpec(
        name=name,
        key=key,
        output=bool(raw.get("output")),
        file=text("file"),
        run=text("run"),
        trials=bool(raw.get("trials")),
        min=bounds["min"],
        max=bounds["max"],
        equals=equals,
        diagnosis=str(raw.get("diagnosis") or "").strip(),
    )
