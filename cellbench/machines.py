"""Machine profiles (``profiles/machines/NAME.yaml``): what fits and runs fast on one machine.

A machine profile holds the per-machine half of a config: the micro-batch that fits
(``train.batch_size``), AMP dtype, channels_last, ``torch.compile``, data workers, the memory
guard's fraction, and the batch of feature extraction and evaluation. ``--machine NAME`` layers
it *under* the task profile (defaults < saved run config < machine < profile < ``--config`` <
``--set``), except for the batch: the study's effective batch (the task profile's batch x
accumulation, without the machine) is kept, split into the machine's micro-batch x accumulation x
processes. So a study written for an H100 (batch 64) runs on a 12 GB MIG slice as batch 8 x
accumulation 8, with the same optimizer updates. A ``--set train.batch_size`` or
``train.grad_accum_steps`` given by hand is kept as given.

``--machine auto`` picks by the detected device: a name match (``gpu_names``: "MIG", "H100",
"A100", "H200"; a MIG slice takes the MIG profile), else the largest profile whose memory does not
exceed the device's; ``cpu`` without CUDA.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.errors import BadInputError, UsageError

MACHINES_DIR = Path(__file__).parent / "profiles" / "machines"
BATCH_KEYS = ("train.batch_size", "train.grad_accum_steps")


@dataclass
class Machine:
    name: str
    description: str
    device: str  # cpu | cuda
    memory_gb: float
    gpu_names: list[str] = field(default_factory=list)
    features_batch: int = 8
    eval_batch: int = 32
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.config.get("train", {}).get("batch_size", 32))

    def config_layer(self) -> dict[str, Any]:
        """The config keys the machine sets, without the batch (fitted by ``fit_batch``)."""
        layer = {k: dict(v) for k, v in self.config.items()}
        for key in BATCH_KEYS:
            section, name = key.split(".")
            layer.get(section, {}).pop(name, None)
        return layer


def machine_names() -> list[str]:
    return sorted(p.stem for p in MACHINES_DIR.glob("*.yaml"))


def load_machine(name: str) -> Machine:
    """A shipped machine profile by name, or a YAML file by path."""
    from cellbench.config import read_yaml

    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise UsageError(f"{candidate}: machine profile not found")
        path = candidate
    else:
        path = MACHINES_DIR / f"{name}.yaml"
        if not path.is_file():
            names = machine_names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(
                f"--machine {name}: unknown{hint}; available: auto, {', '.join(names)}"
            )
    data = read_yaml(path)
    try:
        return Machine(name=path.stem, **data)
    except TypeError as exc:
        raise BadInputError(f"{path}: not a machine profile ({exc})") from exc


def detect() -> str:
    """The machine profile for this process's device (``--machine auto``)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return pick(props.name, props.total_memory / 2**30)


def pick(device_name: str, memory_gib: float) -> str:
    """A machine profile for a CUDA device called ``device_name`` with ``memory_gib`` GiB."""
    machines = [load_machine(n) for n in machine_names()]
    gpus = [m for m in machines if m.device == "cuda"]
    named = [m for m in gpus if any(g.lower() in device_name.lower() for g in m.gpu_names)]
    if named:  # a MIG slice matches both "MIG" and its GPU: the smaller profile is the slice's
        return min(named, key=lambda m: m.memory_gb).name
    fitting = [m for m in gpus if m.memory_gb <= memory_gib * 1.1]  # 80 GB cards report 79 GiB
    if fitting:
        return max(fitting, key=lambda m: m.memory_gb).name
    return min(gpus, key=lambda m: m.memory_gb).name


def resolve(name: str) -> Machine:
    return load_machine(detect() if name == "auto" else name)


def fit_batch(effective: int, world: int, cap: int) -> tuple[int, int] | None:
    """(batch, accumulation) per process with batch x accumulation x world == ``effective`` and
    the largest batch not above ``cap``; None when ``world`` does not divide ``effective``."""
    if effective % world:
        return None
    per_process = effective // world
    batch = max(d for d in range(1, min(cap, per_process) + 1) if per_process % d == 0)
    return batch, per_process // batch


def explicit_batch(overrides: list[str]) -> bool:
    """True when the command line sets the batch or the accumulation itself."""
    return any(o.split("=", 1)[0].strip() in BATCH_KEYS for o in overrides)


def machine_batch(machine: str | None, given: int | None, kind: str, default: int | None):
    """The batch of ``features extract`` (``kind="features"``), ``eval`` or ``predict``
    (``"eval"``): ``given`` (an explicit ``--batch-size``) first, else the machine profile's,
    else ``default``."""
    if given is not None:
        return given
    if machine is None:
        return default
    profile = resolve(machine)
    return profile.features_batch if kind == "features" else profile.eval_batch
