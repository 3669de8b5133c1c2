"""From a phase to its trials: smoke → grid (coarse) → seeds (top-k × N seeds) → final.

- ``smoke``: one short run per model choice of the space (the first value of every other key);
  it checks that each model trains at all before the grid spends hours on it.
- ``grid``: every combination of the space (the phase's own, else the sweep's) × its seeds.
- ``seeds``: the ``top`` best configs of the previous phase (ranked by the mean of their best
  monitored values), each trained with every seed of the phase.
- ``final``: the best config of the previous phase, trained once more from new weights in a new
  run (a new process, no ``--init-from``: nothing of the earlier trials is reused but their
  hyperparameters), with the phase's epochs and ``set`` (other data: seeds/000's RUN 2).
"""

from __future__ import annotations

from typing import Any

from cellbench.errors import UsageError
from cellbench.sweep import space as spaces
from cellbench.sweep.spec import Phase, SweepSpec
from cellbench.sweep.trials import Trial, make_trial


def phase_params(spec: SweepSpec, phase: Phase, ranked: list[dict[str, Any]]) -> list[tuple]:
    """``[(params, seed), ...]`` for ``phase``; ``ranked`` are the previous phase's groups."""
    space = phase.space or spec.space
    if phase.kind == "smoke":
        firsts = {k: v[0] for k, v in space.items() if k != "model"}
        return [({**choice, **firsts}, None) for choice in spaces.model_choices(space)]
    if phase.kind == "grid":
        seeds = phase.seeds or [None]
        return [(params, seed) for params in spaces.grid(space) for seed in seeds]
    if not ranked:
        raise UsageError(
            f"phase {phase.name} ({phase.kind}) needs results of the phase before it: no trial "
            "of that phase completed with a metric"
        )
    if phase.kind == "seeds":
        top = ranked[: phase.top]
        return [(g["rows"][0]["params"], seed) for g in top for seed in phase.seeds or [None]]
    # final: the best config, one run
    return [(ranked[0]["rows"][0]["params"], phase.seed)]


def resolve_phase(
    spec: SweepSpec, phase: Phase, ranked: list[dict[str, Any]], existing: list[Trial]
) -> list[Trial]:
    """The trials of ``phase``, numbered after the ``existing`` ones of the sweep."""
    number = len(existing)
    name_phase = len(spec.phases) > 1
    trials = []
    for params, seed in phase_params(spec, phase, ranked):
        number += 1
        trials.append(
            make_trial(
                spec.name,
                number,
                phase.name,
                params,
                seed,
                spec.sets + phase.sets,
                phase.epochs,
                spec.profile,
                name_phase,
            )
        )
    return trials
