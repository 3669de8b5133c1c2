"""Nuclei scores for people: the PanNuke headline table, per type, per tissue (``eval`` of a
nuclei run and ``eval pannuke``)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_pannuke(summary: dict, title: str, console: Any) -> None:
    """Headline metrics, per type and per tissue, for people."""
    console.print(f"[bold]{escape(title)}[/]", highlight=False)
    head = Table()
    head.add_column("metric", style="bold")
    head.add_column("value", justify="right")
    head.add_column("averaging")
    rows = (
        ("bPQ", "bPQ", "per tissue, then over tissues (PanNuke)"),
        ("mPQ", "mPQ", "per tissue, then over tissues (PanNuke)"),
        ("bPQ (image avg)", "bPQ_image_avg", "over images (CellViT's printout)"),
        ("mPQ (image avg)", "mPQ_image_avg", "over images (CellViT's printout)"),
        ("mPQ+", "mPQ_plus", "TP/FP/FN pooled over the set per type (CoNIC)"),
        ("bDQ", "bDQ", "over images"),
        ("bSQ", "bSQ", "over images"),
        ("Dice", "dice", "binary, over images"),
        ("AJI", "aji", "over images"),
        ("AJI+", "aji_plus", "over images"),
    )
    for label, key, how in rows:
        head.add_row(label, _score(summary.get(key)), f"[dim]{how}[/]")
    console.print(head)

    per_type = Table(title="Per type")
    for column in ("type", "PQ", "PQ+", "TP", "FP", "FN", "images"):
        per_type.add_column(column, justify="left" if column == "type" else "right")
    for name, row in summary["per_type"].items():
        per_type.add_row(
            name,
            _score(row["PQ"]),
            _score(row["PQ_plus"]),
            str(row["tp"]),
            str(row["fp"]),
            str(row["fn"]),
            str(row["images"]),
        )
    console.print(per_type)

    per_tissue = Table(title="Per tissue")
    for column in ("tissue", "tiles", "bPQ", "mPQ"):
        per_tissue.add_column(column, justify="left" if column == "tissue" else "right")
    for name, row in summary["per_tissue"].items():
        per_tissue.add_row(name, str(row["tiles"]), _score(row["bPQ"]), _score(row["mPQ"]))
    console.print(per_tissue)
    console.print(
        f"[dim]{summary['tiles']} tiles · {summary['true_nuclei']} true nuclei · "
        f"{summary['pred_nuclei']} predicted · match at IoU > {summary['iou_threshold']} · "
        "'-' = not scored (no nucleus of it in the ground truth)[/]",
        highlight=False,
    )


def render_nuclei_eval(result: dict[str, Any], console: Any) -> None:
    """A nuclei run's evaluation: the PanNuke report, the files, the export."""
    family = f" · {result['family']}" if result.get("family") else ""
    title = (
        f"{result['run']} · {result['split']} (fold {result['fold']}){family} · "
        f"{result['checkpoint']} (epoch {result.get('epoch')}) · {result['tiles']} tiles"
    )
    render_pannuke(result["metrics"], title, console)
    for name, path in result["files"].items():
        console.print(f"[dim]{name:>11}[/] {escape(path)}", highlight=False)
    if result.get("export"):
        console.print(
            f"[dim]     export[/] {escape(result['export'])} (cellbench eval pannuke --true "
            f"{escape(result['export'])}/true --pred {escape(result['export'])}/pred)",
            highlight=False,
        )


def nuclei_eval_messages(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(level, text) lines for stderr: the tuning, the post-processing used, a leak."""
    out = []
    tuning = result.get("tuning")
    if tuning:
        out.append((
            "log",
            f"post-processing tuned on the val fold {tuning['folds'][0]} ({tuning['tiles']} tiles,"
            f" {tuning['trials']} trials): bPQ {tuning['default_bPQ']:.4f} with the defaults -> "
            f"{tuning['bPQ']:.4f}; frozen into {tuning['path']}",
        ))  # fmt: skip
    out.append(("log", f"post-processing: {result['postproc']['description']}"))
    if result["leak"]:
        out.append((
            "warn",
            f"fold {result['fold']} is the run's training fold (--allow-leak): inflated numbers",
        ))  # fmt: skip
    return out
