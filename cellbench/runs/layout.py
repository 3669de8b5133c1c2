"""The files inside one run folder ``runs/<id>-<name>/``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Used with ``fullmatch``: ``$`` also matches before a final newline, so "nl\n" passed a
# ``match(...$)`` check. ``\Z`` keeps a stray ``.match`` call whole-string too.
RUN_DIR_RE = re.compile(r"(?P<id>\d{4,})-(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\Z")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def id(self) -> int:
        return int(RUN_DIR_RE.fullmatch(self.root.name)["id"])

    @property
    def name(self) -> str:
        return RUN_DIR_RE.fullmatch(self.root.name)["name"]

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def lock(self) -> Path:
        return self.root / "lock"
