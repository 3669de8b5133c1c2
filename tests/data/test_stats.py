"""``data stats``: the same counts from raw and store, families, plot, classification dispatch."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.data.stats import dataset_stats

runner = CliRunner()


def test_raw_and_store_agree_and_match_the_manifest(raw_master, store_master):
    raw, store = dataset_stats(raw_master), dataset_stats(store_master)
    assert raw.folds == store.folds and raw.types == store.types
    manifest = json.loads((store_master / "fold1" / "manifest.json").read_text())
    assert store.folds[1]["nuclei"] == manifest["counts"]["nuclei"]
    assert sum(t["tiles"] for t in store.tissues.values()) == 18
    assert sum(f["nuclei"] for f in store.families.values()) == sum(
        f["nuclei"] for f in store.folds.values()
    )
    assert sum(store.areas["Neoplastic"]) == store.types["Neoplastic"]["nuclei"]


def test_cli_tables_json_plot_and_family(store_master, tmp_path):
    plot = tmp_path / "stats.png"
    result = runner.invoke(app, ["data", "stats", str(store_master), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "Neoplastic" in result.stdout and "Families" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = json.loads(runner.invoke(app, ["data", "stats", str(store_master), "--json"]).stdout)
    fam = runner.invoke(
        app, ["data", "stats", str(store_master), "--json", "--family", "digestive"]
    )
    part = json.loads(fam.stdout)
    assert set(part["families"]) <= {"digestive"}
    tiles = sum(f["tiles"] for f in part["folds"].values())
    assert tiles == full["families"].get("digestive", {}).get("tiles", 0)
    bad = runner.invoke(app, ["data", "stats", str(store_master), "--family", "gut"])
    assert bad.exit_code == 2 and "unknown family" in bad.stderr


def test_classification_folder_shows_class_counts(tmp_path):
    for cls, n in (("cats", 3), ("dogs", 5)):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(
                tmp_path / "pets" / cls / f"{i}.png"
            )
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "pets"), "--json"])
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    totals = {}
    for per in splits.values():
        for cls, count in per.items():
            totals[cls] = totals.get(cls, 0) + count
    assert totals == {"cats": 3, "dogs": 5}


def test_profile_families_replace_the_defaults(store_master, tmp_path):
    first, second = sorted(set(json.loads((store_master / "fold1" / "tissues.json").read_text())))[
        :2
    ]
    profile = tmp_path / "mine.yaml"
    profile.write_text(f"data:\n  families:\n    one: [{first}]\n    two: [{second}]\n")
    args = ["data", "stats", str(store_master), "--json", "--profile", str(profile)]
    full = json.loads(runner.invoke(app, args).stdout)
    assert {"one", "two"} <= set(full["families"]) <= {"one", "two", "(none)"}
    result = runner.invoke(app, [*args, "--family", "one"])
    assert result.exit_code == 0, result.output
    part = json.loads(result.stdout)
    assert set(part["tissues"]) == {first}
    assert part["families"]["one"]["tiles"] == full["tissues"][first]["tiles"]
    # Without the profile, "one" is not a family.
    default = runner.invoke(app, ["data", "stats", str(store_master), "--family", "one"])
    assert default.exit_code == 2
