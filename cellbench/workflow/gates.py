"""Gates: a named check of one value a phase wrote (a JSON file), against a range.

The value is always read from a file the phase wrote — its ``--json`` output, a store or
feature-store manifest, a run's ``metrics.json`` — never from the text it printed. A key with
``*`` reads every entry (``folds.*.cls_std``: every fold); a file glob reads every match (every
fold manifest); ``trials: true`` reads every trial run of a sweep phase. Every value must pass;
the gate reports the first that does not (or the last one read) and keeps all of them.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellbench.workflow.spec import GateSpec

MISSING = "missing"


@dataclass
class GateResult:
    name: str
    ok: bool
    value: Any  # the failing value, or the last one read
    expected: str
    diagnosis: str
    source: str  # where the failing (or last) value was read
    values: dict[str, Any] = field(default_factory=dict)  # every value read, by source
    problem: str | None = None  # the value could not be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """``gate cls_std: 0.281 (expected 0.70 .. 0.90) at FILE — DIAGNOSIS``."""
        shown = _fmt(self.value)
        why = f" — {self.diagnosis}" if self.diagnosis and not self.ok else ""
        problem = f" ({self.problem})" if self.problem else ""
        return (
            f"gate {self.name}: {shown}{problem} (expected {self.expected}) at {self.source}{why}"
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def lookup(data: Any, key: str) -> list[tuple[str, Any]]:
    """``(path, value)`` pairs at a dotted key; ``*`` walks every entry of a mapping or list."""
    found: list[tuple[str, Any]] = [("", data)]
    for part in key.split("."):
        nxt = []
        for path, node in found:
            if part == "*":
                items = node.items() if isinstance(node, dict) else enumerate(node or [])
                if isinstance(node, dict | list):
                    nxt += [(f"{path}.{k}" if path else str(k), v) for k, v in items]
            elif isinstance(node, dict) and part in node:
                nxt.append((f"{path}.{part}" if path else part, node[part]))
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                nxt.append((f"{path}.{part}" if path else part, node[int(part)]))
        found = nxt
    return found


def passes(gate: GateSpec, value: Any) -> bool:
    if gate.equals is not None:
        return value == gate.equals or str(value) == str(gate.equals)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if gate.min is not None and value < gate.min:
        return False
    return not (gate.max is not None and value > gate.max)


def gate_files(gate: GateSpec, output: Path | None, runs: list[Path]) -> list[Path]:
    """The files a gate reads: the phase's JSON output, a glob, or one file per run folder
    (``runs``: the named run, or the trial runs of a sweep phase)."""
    if gate.output:
        return [output] if output is not None else []
    if gate.run is not None or gate.trials:
        return [run / (gate.file or "metrics.json") for run in runs]
    assert gate.file is not None
    matches = sorted(glob.glob(str(Path(gate.file).expanduser())))
    return [Path(m) for m in matches] or [Path(gate.file)]


def evaluate(gate: GateSpec, files: list[Path]) -> GateResult:
    result = GateResult(gate.name, False, None, gate.expected(), gate.diagnosis, "-")
    if not files:
        result.problem = "nothing to read (no run, no trial, no file)"
        return result
    failing = None
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            result.value, result.source = MISSING, str(path)
            result.problem = f"unreadable: {getattr(exc, 'strerror', None) or exc}"
            return result
        pairs = lookup(data, gate.key)
        if not pairs:
            result.value, result.source = MISSING, str(path)
            result.problem = f"no key {gate.key}"
            return result
        for where, value in pairs:
            source = f"{path}:{where}"
            result.values[source] = value
            if failing is None:
                result.value, result.source = value, source
                if not passes(gate, value):
                    failing = source
    result.ok = failing is None
    return result
