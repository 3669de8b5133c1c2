"""The nuclei workflow of ``cellbench quickstart`` (seeds/001 on generated data), and its summary.

synth -> prepare -> check -> features extract (vit-demo) -> features check -> organ head ->
train --family digestive -> tune post-processing (val fold) -> eval (test fold, PanNuke export)
-> eval pannuke of the export -> predict -> a table of the numbers and sanity checks.

Each step is a real command (``quickstart._run_step``), so the summary reads what those commands
wrote into the runs and the data folder; nothing here computes a metric of its own.
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
EXAMPLES = 3  # test tiles written as PNGs for the predict step


@dataclass
class NucleiPlan:
    data_dir: Path
    runs: list[str]  # ["--runs-dir", DIR] or []
    tiles: int
    tile_size: int
    epochs: int | None
    workers: int

    @property
    def raw(self) -> Path:
        return self.data_dir / "pannuke-raw"

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


def nuclei_steps(plan: NucleiPlan, existing: set[str]) -> list[tuple[str, list[str]]]:
    """(title, argv) of every step before predict; ``existing``: quickstart runs already there
    (cleaned first, so a second quickstart retrains from nothing)."""
    runs = plan.runs
    features = str(plan.features)
    steps: list[tuple[str, list[str]]] = [
        (
            "Generate PanNuke-like raw folds",
            ["data", "synth", "--out", str(plan.raw), "--tiles", str(plan.tiles)]
            + ["--size", str(plan.tile_size), "--force"],
        ),
        (
            "Convert to the canonical store",
            ["data", "prepare", "--pannuke", str(plan.raw), "--out", str(plan.store)],
        ),
        ("Validate the store", ["data", "check", str(plan.store)]),
        (
            "Extract frozen-backbone features (a small random ViT)",
            ["features", "extract", "--data", str(plan.store), "--backbone", BACKBONE]
            + ["--device", "cpu", "--force"],
        ),
        (
            "Check the features (CLS std, NaN, duplicates, staleness)",
            ["features", "check", features],
        ),
    ]
    for run in (ORGAN_RUN, NUCLEI_RUN):
        if run in existing:
            steps.append(
                (f"Clean the previous {run} run", ["clean", "--run", run, "--all", "--yes", *runs])
            )
    steps.append(
        (
            "Train the organ head on the CLS tokens",
            ["train", "--profile", "organ-demo", "--features", features, "--run", ORGAN_RUN, *runs],
        )
    )
    train = ["train", "--profile", "nuclei-demo", "--family", FAMILY, "--features", features]
    train += ["--run", NUCLEI_RUN, *runs]
    if plan.epochs is not None:
        train += ["--epochs", str(plan.epochs)]
    workers = ["--workers", str(plan.workers)]
    steps += [
        (f"Train the {FAMILY} nuclei decoder (NP, HV, NT heads)", train),
        (
            "Tune post-processing on the validation fold",
            ["eval", "--run", NUCLEI_RUN, "--split", "val", "--tune-postproc", *workers, *runs],
        ),
        (
            "Evaluate on the test fold (PanNuke rules) and export PanNuke masks",
            ["eval", "--run", NUCLEI_RUN, "--split", "test", "--export", str(plan.export)]
            + [*workers, *runs],
        ),
        (
            "Re-score the export with eval pannuke",
            ["eval", "pannuke", "--true", str(plan.export / "true")]
            + ["--pred", str(plan.export / "pred")],
        ),
    ]
    return steps


def example_tiles(plan: NucleiPlan) -> list[str]:
    """A few test-fold tiles of the family as PNG files (what a user would bring to predict)."""
    import numpy as np
    from PIL import Image

    from cellbench.data.families import tiles_for_family
    from cellbench.data.store import open_fold

    fold = open_fold(plan.store, 3)
    folder = plan.data_dir / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for tile in tiles_for_family(fold.tissues, FAMILY)[:EXAMPLES]:
        path = folder / f"test-tile{tile}-{fold.tissues[tile]}.png"
        Image.fromarray(np.asarray(fold.images[tile])).save(path)
        paths.append(str(path))
    return paths


def predict_step(plan: NucleiPlan, images: list[str]) -> tuple[str, list[str]]:
    return (
        "Predict nuclei of new images (overlay PNG + QuPath GeoJSON)",
        ["predict", "--run", NUCLEI_RUN, "--out", str(plan.predictions), *plan.runs, *images],
    )


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
