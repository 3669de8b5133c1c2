"""The nuclei quickstart: the shipped ``demo`` workflow (seeds/001 on generated data), and its
summary table.

synth -> prepare -> check -> features extract (vit-demo) -> features check -> organ head ->
train --family digestive -> tune post-processing (val fold) -> eval (test fold, PanNuke export)
-> eval pannuke of the export -> test tiles as PNG -> predict -> cleanup, each phase gated
(``cellbench/profiles/workflows/demo.yaml``), then a table of the numbers and sanity checks.

Each phase is a real command run by the workflow runner, so the summary reads what those
commands wrote into the runs and the data folder; nothing here computes a metric of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from cellbench.cli.common import console

ORGAN_RUN = "quickstart-organ"
NUCLEI_RUN = "quickstart-digestive"
FAMILY = "digestive"
BACKBONE = "vit-demo"
# the bar for the generated test fold
TARGETS = {"np_dice": 0.8, "bPQ": 0.5}


@dataclass
class NucleiPlan:
    data_dir: Path
    runs: list[str]  # ["--runs-dir", DIR] or []
    tiles: int
    tile_size: int
    epochs: int | None
    workers: int

    @property
    def store(self) -> Path:
        return self.data_dir / "pannuke"

    @property
    def features(self) -> Path:
        return self.store / "features" / BACKBONE

    @property
    def export(self) -> Path:
        return self.data_dir / "predictions-pannuke"

    @property
    def predictions(self) -> Path:
        return self.data_dir / "predictions"


def demo_sets(plan: NucleiPlan) -> list[str]:
    """The ``--set`` parameters of the shipped ``demo`` workflow for this quickstart."""
    sets = [
        f"data={plan.data_dir}",
        f"tiles={plan.tiles}",
        f"tile_size={plan.tile_size}",
        f"workers={plan.workers}",
        f"backbone={BACKBONE}",
        f"tag={BACKBONE}",
        f"family={FAMILY}",
        f"organ_run={ORGAN_RUN}",
        f"decoder_run={NUCLEI_RUN}",
    ]
    if plan.epochs is not None:
        sets.append(f"epochs={plan.epochs}")
    return sets


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4f}"


def summary(plan: NucleiPlan, runs_dir: Path | None, seconds: float) -> dict[str, Any]:
    """The headline numbers the steps wrote, printed as one table; returned for tests."""
    from cellbench.runs.store import RunStore

    store = RunStore(runs_dir)
    organ = store.resolve(ORGAN_RUN)
    nuclei = store.resolve(NUCLEI_RUN)
    features = _read(plan.features / "manifest.json")
    cls_std = (_read(plan.features / "fold1" / "manifest.json").get("stats") or {}).get("cls_std")
    cls_range = (features.get("expect") or {}).get("cls_std")
    organ_metrics = _read(organ.metrics)
    nuclei_metrics = _read(nuclei.metrics)
    tuned = _read(nuclei.root / "postproc.json")
    test = _read(nuclei.eval_dir / "test-best.json")
    val_best = (nuclei_metrics.get("best") or {}).get("metrics") or {}
    test_metrics = test.get("metrics") or {}
    # NP Dice of the test fold: the binary Dice of the post-processed nuclei (every pixel)
    rows: list[tuple[str, str, str]] = [
        (
            "features",
            f"CLS std (fold 1), expected {cls_range}",
            _fmt(cls_std),
        ),
        (
            "organ head",
            "val accuracy (families)",
            _fmt(((organ_metrics.get("best") or {}).get("metrics") or {}).get("val_accuracy")),
        ),
        ("decoder, val", "NP Dice", _fmt(val_best.get("val_np_dice"))),
        ("decoder, val", "HV MSE", _fmt(val_best.get("val_hv_mse"))),
        ("decoder, val", "NT accuracy", _fmt(val_best.get("val_nt_accuracy"))),
        (
            "post-processing",
            "val bPQ default -> tuned",
            f"{_fmt(tuned.get('default_bPQ'))} -> {_fmt(tuned.get('bPQ'))}",
        ),
        ("test fold", "bPQ (PanNuke)", _fmt(test_metrics.get("bPQ"))),
        ("test fold", "mPQ (PanNuke)", _fmt(test_metrics.get("mPQ"))),
        ("test fold", "NP Dice", _fmt(test_metrics.get("dice"))),
        ("test fold", "AJI", _fmt(test_metrics.get("aji"))),
    ]
    checks = [c for c in nuclei_metrics.get("checks") or [] if c.get("severity") != "info"]
    table = Table(title=f"quickstart summary · {seconds:.0f} s")
    for column in ("step", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        table.add_row(*row)
    dice, bpq = test_metrics.get("dice"), test_metrics.get("bPQ")
    bar = {
        "np_dice": isinstance(dice, float) and dice >= TARGETS["np_dice"],
        "bPQ": isinstance(bpq, float) and bpq >= TARGETS["bPQ"],
    }
    for key, ok in bar.items():
        table.add_row(
            "target",
            f"test {key} >= {TARGETS[key]}",
            "[green]met[/]" if ok else "[yellow]missed[/]",
        )
    table.add_row(
        "sanity checks",
        "warnings during training",
        "none" if not checks else "; ".join(c["check"] for c in checks),
    )
    console.print(table)
    return {"rows": rows, "targets": bar, "checks": checks, "test": test_metrics}
