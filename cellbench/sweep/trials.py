"""Trials: one config of a sweep = one ordinary run, with a readable name and its train command.

A trial's run name reads like the study's tables: ``<sweep>-t007-lr3e-3-bs32-s1`` (the sweep,
the trial number, the values that vary, the seed). Run names allow letters, digits, ``.``, ``_``
and ``-`` only (``cellbench.runs.layout.NAME_RE``), so the key and value are written side by
side (``lr3e-3``) rather than with ``=``; the rule of run names stays as it is.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from cellbench.sweep.space import Params, to_sets

# short labels for the keys studies vary most; any other key uses its last part
ABBREVIATIONS = {
    "train.lr": "lr",
    "train.batch_size": "bs",
    "train.weight_decay": "wd",
    "train.epochs": "ep",
    "train.label_smoothing": "ls",
    "train.mixup": "mix",
    "train.warmup_epochs": "wu",
    "model.drop_rate": "drop",
    "model.args.num_modules": "M",
    "model.args.branch_channels": "bc",
    "data.image_size": "img",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME = 120


@dataclass
class Trial:
    id: str  # t001, t002... unique within the sweep, in the order trials were resolved
    name: str  # the run name
    phase: str
    params: Params  # the values that vary (no seed)
    seed: int | None  # None: the profile's seed
    sets: list[str] = field(default_factory=list)  # every --set of its train command
    profile: str | None = None

    @property
    def group(self) -> str:
        """Trials of one phase with the same params (differing only by seed) form a group."""
        return self.phase + ":" + json.dumps(self.params, sort_keys=True, default=str)

    def train_args(self) -> list[str]:
        """The ``cellbench train`` arguments of this trial (a new run named after it)."""
        args = ["train"]
        if self.profile:
            args += ["--profile", self.profile]
        for text in self.sets:
            args += ["--set", text]
        return args

    def command(self, run_name: str | None = None) -> str:
        """The shell command that trains this config again (as a new run)."""
        args = self.train_args() + (["--run", run_name] if run_name else [])
        return "cellbench " + " ".join(shlex.quote(a) for a in args)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.2e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    return str(value)


def label(params: Params) -> str:
    """``{"train.lr": 0.003, "train.batch_size": 32}`` -> ``lr3e-3-bs32``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, dict):
            continue  # model.args of a model choice: the model name says which
        if key == "model.name":
            parts.append(format_value(value))
            continue
        short = ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1])
        parts.append(f"{short}{format_value(value)}")
    return "-".join(parts)


def run_name(sweep: str, trial_id: str, params: Params, seed: int | None, phase: str = "") -> str:
    body = _UNSAFE.sub("_", label(params)).strip("_-.")
    head = f"{sweep}-{phase}-{trial_id}" if phase else f"{sweep}-{trial_id}"
    tail = f"-s{seed}" if seed is not None else ""
    room = MAX_NAME - len(head) - len(tail) - 1
    if body and room > 0:
        head = f"{head}-{body[:room].rstrip('_-.')}"
    return head + tail


def make_trial(
    sweep: str,
    number: int,
    phase: str,
    params: Params,
    seed: int | None,
    base_sets: list[str],
    epochs: int | None,
    profile: str | None,
    name_phase: bool,
) -> Trial:
    trial_id = f"t{number:03d}"
    sets = list(base_sets) + to_sets(params)
    if epochs is not None:
        sets.append(f"train.epochs={epochs}")
    if seed is not None:
        sets.append(f"train.seed={seed}")
    name = run_name(sweep, trial_id, params, seed, phase if name_phase else "")
    return Trial(trial_id, name, phase, dict(params), seed, sets, profile)
