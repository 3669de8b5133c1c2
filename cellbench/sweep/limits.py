"""Refuse a sweep early: too many trials, or a grid value no trial could train with.

The number of trials is computed from the lengths of the space's value lists (a product, never
the combinations themselves), so a space of 10⁶ combinations is refused in milliseconds with
its count, not after building a 674 MB ``trials.json``. The limit is ``--max-trials``
(default ``DEFAULT_MAX_TRIALS``).

Every value of the space is then checked in the config a trial would get (the sweep's profile
and ``set``, the phase's ``set``, the value): types and bounds by ``load_config``, and what the
config alone cannot say — an organ family that the config's ``data.families`` does not have
(``data.family=urologicc``) — so a typo fails before the first trial, not in each of them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cellbench.errors import BadInputError, UsageError
from cellbench.sweep.spec import Phase, SweepSpec

DEFAULT_MAX_TRIALS = 1000


def phase_trials(spec: SweepSpec, phase: Phase) -> int:
    """How many trials ``phase`` will have (seeds/final: at most, before the ranking)."""
    space = phase.space or spec.space
    if phase.kind == "smoke":
        return len(space.get("model") or [{}])
    if phase.kind == "grid":
        return math.prod(len(v) for v in space.values()) * len(phase.seeds or [None])
    if phase.kind == "seeds":
        return phase.top * len(phase.seeds or [None])
    return 1


def check_size(spec: SweepSpec, max_trials: int) -> int:
    """The sweep's trial count; UsageError (exit 2) above ``max_trials``."""
    counts = {phase.name: phase_trials(spec, phase) for phase in spec.phases}
    total = sum(counts.values())
    if total > max_trials:
        space = spec.space or next((p.space for p in spec.phases if p.space), {}) or {}
        shape = " × ".join(f"{k} {len(v)}" for k, v in space.items())
        raise UsageError(
            f"sweep {spec.name}: {total:,} trials ({shape}) exceed --max-trials {max_trials:,}; "
            "narrow the space, or raise --max-trials"
        )
    return total


def _config_problem(config: Any) -> str | None:
    """What a loaded config cannot train with although every field has its type."""
    if config.data.family is not None:
        from cellbench.data.families import check_family

        try:
            check_family(config.data.family, config.data.families)
        except UsageError as exc:
            return str(exc)
    return None


def _missing_data(config: Any) -> str | None:
    """A local data path that the trials read and that is not there: every trial would fail on
    it and be recorded failed (a plain rerun then exits 1 until --retry-failed); said once,
    before any. Only where the task reads it (``Task.reads_data_path``): a task training on a
    feature store, or making its own data, does not."""
    from cellbench.tasks import get_task

    path = str(config.data.path or "")
    if not path or "://" in path or path.startswith("hf") or Path(path).exists():
        return None
    if get_task(config.task).reads_data_path(config):
        return (
            f"data.path {path}: not found (a relative path is taken from the current folder, "
            f"{Path.cwd()})"
        )
    return None


def check_values(spec: SweepSpec) -> None:
    """Each value of each space, in the config of its trials; the first bad key and value
    refused before any folder or trial exists: UsageError (exit 2) for a command-line sweep,
    BadInputError (exit 3) naming the sweep file for one from a file."""
    from cellbench.config import load_config
    from cellbench.sweep.space import to_sets

    from_file = spec.source != "command line"
    error = BadInputError if from_file else UsageError
    where = spec.source if from_file else f"sweep {spec.name}"
    missing = None  # after every value's own check: a typo in a value is the more precise error

    for phase in spec.phases:
        space = phase.space or spec.space
        if phase.kind not in ("grid", "smoke") or not space:
            continue
        sets = [*spec.sets, *phase.sets]
        for key, values in space.items():
            for value in values:
                params = value if key == "model" else {key: value}
                shown = ", ".join(to_sets(params))
                try:
                    config = load_config(profile=spec.profile, overrides=[*sets, *to_sets(params)])
                except (UsageError, BadInputError) as exc:
                    raise error(f"{where}: {shown}: {exc}") from exc
                problem = _config_problem(config)
                if problem:
                    raise error(f"{where}: {shown}: {problem}")
                gone = _missing_data(config)
                missing = missing or (f"{where}: {shown}: {gone}" if gone else None)
    if missing:
        raise error(missing)
