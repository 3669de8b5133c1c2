"""An organ-head evaluation for people: metrics, calibration, per tissue, the files."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cellbench.tasks.classify.render import render_classification


def render_organ(result: dict[str, Any], console: Any) -> None:
    render_classification(result, console)
    per_tissue = Table(title="Per tissue")
    for column in ("tissue", "target", "tiles", "correct", "accuracy"):
        per_tissue.add_column(column, justify="left" if column in ("tissue", "target") else "right")
    for row in result["per_tissue"]:
        per_tissue.add_row(
            row["tissue"], row["target"], str(row["tiles"]), str(row["correct"]),
            f"{row['accuracy']:.4f}",
        )  # fmt: skip
    console.print(per_tissue)
    cal = result["calibration"]
    console.print(
        f"calibration: temperature {cal['temperature']:.3g} (the run's) · ECE "
        f"{cal['ece_uncalibrated']:.4f} uncalibrated -> {cal['ece']:.4f}",
        highlight=False,
    )
