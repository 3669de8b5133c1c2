"""Sweep specs: a base profile, fixed overrides, a search space, seeds and phases.

From a sweep file (YAML; shipped ones in ``cellbench/profiles/sweeps/``)::

    name: demo-study             # default: the file's stem
    profile: demo                # a shipped profile or a YAML path (relative to the sweep file)
    set: {train.epochs: 2}       # fixed for every trial (a mapping or a list of "key=value")
    space:                       # see cellbench.sweep.space
      train.lr: {log: [1e-3, 1e-2], num: 3}
      train.batch_size: [16, 32]
      model: [simple_cnn, {name: inception_multibranch, args: {num_modules: 2}}]
    seeds: 1                     # trials per config in a grid phase: N (seeds 1..N) or a list
    phases:                      # default: one grid phase over the space
      - {name: smoke, kind: smoke, epochs: 1, set: {data.max_samples: 64}}
      - {name: coarse, kind: grid, epochs: 2}
      - {name: seeds, kind: seeds, top: 2, seeds: 3, epochs: 5}
      - {name: final, kind: final, epochs: 30, set: {data.path: data/run2}}

Phase kinds: ``smoke`` (one short run per model choice; any failure stops the sweep),
``grid`` (every combination of the space, or of the phase's own ``space``), ``seeds`` (the ``top``
best configs of the previous phase, each with ``seeds`` seeds), ``final`` (the best config of the
previous phase, retrained from new weights for ``epochs``, optionally on other data).
Problems in a file exit 3 (bad input), on the command line exit 2.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellbench.config import PROFILES_DIR, find_profile, parse_override, read_yaml
from cellbench.errors import BadInputError, UsageError
from cellbench.runs.layout import NAME_RE
from cellbench.sweep import space as spaces

SWEEPS_PROFILE_DIR = PROFILES_DIR / "sweeps"
PHASE_KINDS = ("smoke", "grid", "seeds", "final")
_TOP_KEYS = ("name", "profile", "set", "space", "seeds", "epochs", "phases")
_PHASE_KEYS = ("name", "kind", "epochs", "set", "space", "top", "seeds", "seed")


@dataclass
class Phase:
    name: str
    kind: str
    epochs: int | None = None
    sets: list[str] = field(default_factory=list)
    space: dict[str, list[Any]] | None = None  # None: the sweep's space
    top: int = 2  # seeds phase: how many configs of the previous phase
    seeds: list[int] | None = None  # None: the trial keeps the profile's seed
    seed: int | None = None  # final phase


@dataclass
class SweepSpec:
    name: str
    profile: str | None
    sets: list[str]
    space: dict[str, list[Any]]
    phases: list[Phase]
    source: str  # the file, or "command line"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_study(self, other: dict[str, Any]) -> bool:
        """True when a saved spec describes the same trials (the source may have moved)."""
        mine = {k: v for k, v in self.to_dict().items() if k != "source"}
        theirs = {k: v for k, v in other.items() if k != "source"}
        return mine == theirs


def check_sweep_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name.isdigit():
        raise UsageError(
            f"sweep name '{name}': use letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (not only digits)"
        )
    return name


def seeds_list(value: Any, where: str, error: type[Exception]) -> list[int] | None:
    """``3`` -> ``[1, 2, 3]``; a list stays; ``None`` stays."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise error(f"{where}: seeds is a count or a list of integers")
    if isinstance(value, int):
        if value < 1:
            raise error(f"{where}: seeds must be at least 1")
        return list(range(1, value + 1))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        if len(set(value)) != len(value):
            raise error(f"{where}: seeds lists a seed twice")
        return list(value)
    raise error(f"{where}: seeds is a count or a list of integers, got {value!r}")


def from_command_line(
    profile: str | None,
    sets: list[str],
    grids: list[str],
    seeds: int | None,
    epochs: int | None,
    name: str,
) -> SweepSpec:
    """``cellbench sweep --profile P --grid k=v1,v2 ...``: one grid phase."""
    if not grids:
        raise UsageError("sweep: give a sweep FILE or at least one --grid KEY=V1,V2")
    space: dict[str, list[Any]] = {}
    for text in grids:
        key, values = spaces.parse_grid_option(text)
        if key in space:
            raise UsageError(f"--grid {key}: given twice; list every value in one --grid")
        space[key] = values
    for text in sets:
        parse_override(text)
    phase_seeds = seeds_list(seeds, "--seeds", UsageError)
    phase = Phase(name="grid", kind="grid", epochs=epochs, seeds=phase_seeds)
    check_space_against_phase(space, phase, "--grid", UsageError)
    return SweepSpec(
        name=check_sweep_name(name),
        profile=_profile_ref(profile, None),
        sets=list(sets),
        space=space,
        phases=[phase],
        source="command line",
    )


def check_space_against_phase(
    space: dict[str, list[Any]], phase: Phase, where: str, error: type[Exception]
) -> None:
    """Refuse a space that varies what the sweep fixes: a trial's ``train.epochs`` from
    ``--epochs``/the phase's ``epochs`` and its ``train.seed`` from ``--seeds``/``seeds`` come
    after the space's values and would silently replace them (two "configs" trained alike,
    ranked apart); ``data.split_seed`` would rank trials on different validation images."""
    if "data.split_seed" in space:
        raise error(
            f"{where}: data.split_seed cannot vary in a sweep: every trial must be ranked on "
            "the same validation images (fix it with set instead)"
        )
    if "train.epochs" in space and phase.epochs is not None:
        raise error(
            f"{where}: train.epochs varies in the space and is also fixed by epochs "
            f"({phase.epochs}, from --epochs or the sweep file): keep one of them"
        )
    if "train.seed" in space and (phase.seeds or phase.seed is not None):
        raise error(
            f"{where}: train.seed varies in the space and is also set by seeds: keep one of "
            "them (seeds trains every config with each seed)"
        )


def find_sweep_file(ref: str) -> Path:
    """A sweep file by path, or a shipped one by name (``tiny_imagenet_grid``)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.suffix not in (".yaml", ".yml"):
        for folder in sweep_file_dirs():
            found = folder / f"{ref}.yaml"
            if found.is_file():
                return found
    names = sorted({p.stem for d in sweep_file_dirs() for p in d.glob("*.yaml")})
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise BadInputError(f"{ref}: no such sweep file{hint}; known: {', '.join(names)}")


def shipped_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_PROFILE_DIR.glob("*.yaml"))


def sweep_file_dirs() -> list[Path]:
    """Where a sweep file name is looked up: the workspace's ``<profiles>/sweeps`` first, then
    the shipped ones."""
    from cellbench.config import profile_dirs

    return [d / "sweeps" for d in profile_dirs() if (d / "sweeps").is_dir()]


def load_sweep_file(
    ref: str, extra_sets: list[str], epochs: int | None, name: str | None
) -> SweepSpec:
    path = find_sweep_file(ref)
    data = read_yaml(path)  # malformed YAML: exit 3 naming the file and line
    where = str(path)
    _check_keys(data, _TOP_KEYS, where)
    raw_space = data.get("space") or {}
    if not isinstance(raw_space, dict):
        raise BadInputError(f"{where}: space must be a mapping of config keys to values")
    space = _space(raw_space, where)
    base_sets = _sets(data.get("set"), f"{where}: set") + list(extra_sets)
    for text in extra_sets:
        parse_override(text)
    seeds = seeds_list(data.get("seeds"), where, BadInputError)
    top_epochs = epochs if epochs is not None else _int(data.get("epochs"), f"{where}: epochs")
    raw_phases = data.get("phases") or [{"name": "grid", "kind": "grid"}]
    if not isinstance(raw_phases, list):
        raise BadInputError(f"{where}: phases must be a list")
    phases = [_phase(p, i, where, seeds, top_epochs, epochs) for i, p in enumerate(raw_phases)]
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise BadInputError(f"{where}: two phases share a name ({', '.join(names)})")
    for i, phase in enumerate(phases):
        if phase.kind in ("seeds", "final") and i == 0:
            raise BadInputError(f"{where}: phase {phase.name} ({phase.kind}) needs a phase before")
        if phase.kind == "grid" and not (phase.space or space):
            raise BadInputError(f"{where}: phase {phase.name} has no space to search")
        if phase.kind == "grid":
            here = f"{where}: phase {phase.name}"
            check_space_against_phase(phase.space or space, phase, here, BadInputError)
    profile = data.get("profile")
    return SweepSpec(
        name=check_sweep_name(name or str(data.get("name") or path.stem)),
        profile=_profile_ref(profile, path.parent, str(path)),
        sets=base_sets,
        space=space,
        phases=phases,
        source=str(path.resolve()),
    )


def _profile_ref(profile: Any, base_dir: Path | None, where: str = "") -> str | None:
    """A shipped profile name stays a name; a path is made absolute (trials run from anywhere;
    in a sweep file a relative path is relative to the file)."""
    if profile is None:
        return None
    text = str(profile)
    candidate = Path(text).expanduser()
    is_path = candidate.suffix in (".yaml", ".yml") or candidate.parent != Path(".")
    if is_path and base_dir is not None and not candidate.is_absolute():
        candidate = base_dir / candidate
    try:
        found = find_profile(str(candidate) if is_path else text)
    except UsageError as exc:
        if base_dir is None:
            raise
        raise BadInputError(f"{where or base_dir}: profile: {exc}") from exc
    return str(found.resolve()) if is_path else text


def _check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(f"{where}: unknown key '{key}'{hint}; known: {', '.join(allowed)}")


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _sets(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        params = {str(k): v for k, v in value.items()}
        texts = spaces.to_sets(params)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        texts = list(value)
    else:
        raise BadInputError(f"{where}: expected a mapping of config keys or a list of key=value")
    for text in texts:
        try:
            parse_override(text)
        except UsageError as exc:
            raise BadInputError(f"{where}: {exc}") from exc
    return texts


def _space(raw: dict, where: str) -> dict[str, list[Any]]:
    try:
        return {str(k): spaces.expand_values(str(k), v, where) for k, v in raw.items()}
    except UsageError as exc:
        raise BadInputError(str(exc)) from exc


def _phase(
    raw: Any,
    index: int,
    where: str,
    seeds: list[int] | None,
    top_epochs: int | None,
    forced_epochs: int | None,
) -> Phase:
    if not isinstance(raw, dict):
        raise BadInputError(f"{where}: phases[{index}] must be a mapping")
    _check_keys(raw, _PHASE_KEYS, f"{where}: phases[{index}]")
    kind = str(raw.get("kind") or raw.get("name") or "")
    if kind not in PHASE_KINDS:
        close = difflib.get_close_matches(kind, PHASE_KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BadInputError(
            f"{where}: phases[{index}].kind '{kind}' is not one of {', '.join(PHASE_KINDS)}{hint}"
        )
    name = check_sweep_name(str(raw.get("name") or kind))
    here = f"{where}: phase {name}"
    phase_space = raw.get("space")
    if phase_space is not None and not isinstance(phase_space, dict):
        raise BadInputError(f"{here}: space must be a mapping")
    epochs = _int(raw.get("epochs"), f"{here}: epochs")
    top = _int(raw.get("top"), f"{here}: top") or 2
    phase_seeds = seeds_list(raw.get("seeds"), here, BadInputError)
    if kind == "grid" and phase_seeds is None:
        phase_seeds = seeds
    if kind == "seeds" and phase_seeds is None:
        phase_seeds = [1, 2, 3]
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadInputError(f"{here}: seed must be an integer")
    return Phase(
        name=name,
        kind=kind,
        epochs=forced_epochs or epochs or top_epochs,
        sets=_sets(raw.get("set"), f"{here}: set"),
        space=_space(phase_space, here) if phase_space else None,
        top=top,
        seeds=phase_seeds,
        seed=seed,
    )
