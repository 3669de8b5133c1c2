"""Issue 15, point 3: NaN is never a number. A nuclei run whose val fold has no nuclei (its
metrics undefined), trained by a sweep, evaluated, exported and used to predict: every JSON file
and JSON line written anywhere parses with a strict parser; undefined metrics are null in JSON,
blank in CSV, said in a ``warning`` event; ``runs compare`` never prints "nan"."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.store import RunStore

runner = CliRunner()


def _strict(text: str, where: str):
    def refuse(constant: str):
        raise AssertionError(f"{where}: {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _check_tree(root: Path) -> int:
    """Strictly parse every JSON file and JSON line under ``root``; the count parsed."""
    parsed = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in (".json", ".geojson") or path.name.endswith(".cellbench-outputs.json"):
            _strict(path.read_text(), str(path))
            parsed += 1
        elif path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                _strict(line, f"{path}:{n}")
            parsed += 1
        elif path.suffix == ".csv":
            cells = [c.lower() for row in csv.reader(path.open()) for c in row]
            assert not {"nan", "inf", "-inf"} & set(cells), path
    return parsed


@pytest.fixture(scope="module")
def no_val_nuclei(tmp_path_factory):
    """A nuclei store whose fold 2 (split 1's val fold) holds no nucleus, and its features."""
    from tests.helpers_nuclei import make_nuclei_features

    root = tmp_path_factory.mktemp("nan-run")
    features = make_nuclei_features(root, tiles=8)
    for name in ("inst.npy", "types.npy", "hv.npy"):  # the labels only: features stay valid
        labels = np.load(root / "store" / "fold2" / name, mmap_mode="r+")
        labels[:] = 0
        labels.flush()
        del labels
    return root, features


def test_every_json_a_run_eval_and_sweep_write_is_strict(no_val_nuclei):
    from tests.helpers_nuclei import nuclei_overrides

    root, features = no_val_nuclei
    runs = root / "runs"
    sets = [a for s in nuclei_overrides(features, "data.family=null") for a in ("--set", s)]
    swept = runner.invoke(
        app,
        ["sweep", *sets, "--grid", "train.lr=0.003", "--name", "empty", "--runs-dir", str(runs)],
    )
    assert swept.exit_code == 0, swept.output[-3000:]
    (run,) = RunStore(runs).runs()

    history = list(csv.DictReader(run.history.open()))
    assert all(row["val_hv_mse"] == "" for row in history)  # undefined: blank
    metrics = json.loads(run.metrics.read_text())
    assert metrics["final"]["val_hv_mse"] is None
    events = [json.loads(line) for line in run.events.read_text().splitlines()]
    warned = [e["message"] for e in events if e["kind"] == "warning"]
    assert any("val_hv_mse" in m and "val fold 2 has no nuclei" in m for m in warned), warned
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert all(e["metrics"]["val_hv_mse"] is None for e in epochs)  # null, not "nan"
    assert metrics["model"] == "nuclei_decoder"

    evaluated = runner.invoke(
        app,
        ["eval", "--run", run.root.name, "--runs-dir", str(runs), "--split", "val", "--json"]
        + ["--export", str(root / "export")],
    )
    assert evaluated.exit_code == 0, evaluated.output[-3000:]
    _strict(evaluated.stdout, "eval --json")

    image = root / "tile.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 200).save(image)
    predicted = runner.invoke(
        app,
        ["predict", "--run", run.root.name, "--runs-dir", str(runs), str(image), "--json"]
        + ["--out", str(root / "preds")],
    )
    assert predicted.exit_code == 0, predicted.output[-3000:]
    _strict(predicted.stdout, "predict --json")

    compared = runner.invoke(
        app, ["runs", "compare", run.root.name, run.root.name, "--runs-dir", str(runs)]
    )
    assert compared.exit_code == 0 and not re.search(r"\bnan\b", compared.stdout.lower())
    _strict(
        runner.invoke(
            app,
            ["runs", "compare", run.root.name, run.root.name, "--runs-dir", str(runs), "--json"],
        ).stdout,
        "runs compare --json",
    )
    assert _check_tree(root) >= 10  # the store, features, run, eval, sweep, export, predictions
