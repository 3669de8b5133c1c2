"""Short text forms of the numbers a run reports (the TUI does not import the CLI layer)."""

from __future__ import annotations

import math
from typing import Any

STATUS_STYLES = {
    "running": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "crashed": "bold magenta",
    "interrupted": "yellow",
    "created": "dim",
}
SEVERITY_STYLES = {"info": "blue", "warning": "yellow", "error": "bold red"}


def status_style(status: str) -> str:
    return STATUS_STYLES.get(status, "")


def severity_style(severity: str) -> str:
    return SEVERITY_STYLES.get(severity, "yellow")


def number(value: Any) -> str:
    """4 significant digits; NaN and inf spelled out (a diverged loss must show)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def size(n: int | float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def count(n: int | None) -> str:
    """Parameter counts: 151,108 → 151.1K, 86,389,248 → 86.4M."""
    if n is None:
        return "-"
    for limit, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= limit:
            return f"{n / limit:.1f}{unit}"
    return str(n)


def best(best: dict | None) -> str:
    if not best or best.get("value") is None:
        return "-"
    epoch = best.get("epoch")
    where = f" @{epoch}" if epoch is not None else ""
    return f"{best.get('metric', '?')} {number(best.get('value'))}{where}"
