"""A classification evaluation for people: the metrics, the per-class table, the files."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_classification(result: dict[str, Any], console: Any) -> None:
    """Metrics table, per-class table and the files written, on a Rich console."""
    epoch = result.get("epoch")
    title = (
        f"{result['run']} · {result['split']} · {result['checkpoint']}"
        f"{f' (epoch {epoch})' if epoch is not None else ''}{' · EMA' if result.get('ema') else ''}"
        f" · {result['num_samples']} samples"
    )
    console.print(f"[bold]{title}[/]", highlight=False)
    summary = Table()
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        if isinstance(value, int | float) or value is None:
            summary.add_row(key, _fmt(value))
    console.print(summary)

    per_class = Table(title="Per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for row in result["per_class"]:
        style = "red" if row["support"] and row["f1"] < 0.5 else ""
        per_class.add_row(
            row["class"],
            _fmt(row["precision"]),
            _fmt(row["recall"]),
            f"[{style}]{_fmt(row['f1'])}[/]" if style else _fmt(row["f1"]),
            str(row["support"]),
        )
    console.print(per_class)
    for name, path in result["files"].items():
        console.print(f"[dim]{name:>11}[/] {path}", highlight=False)
