"""``cellbench predict`` on a nuclei run: overlay PNG and QuPath GeoJSON per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]
runner = CliRunner()


def _images(nuclei_run, folder, n=2):
    from cellbench.data.store import open_fold

    fold = open_fold(nuclei_run.store, 3)
    folder.mkdir()
    paths = []
    for i in range(n):
        path = folder / f"tile{i}.png"
        Image.fromarray(np.asarray(fold.images[i])).save(path)
        paths.append(str(path))
    return paths


def test_predict_writes_an_overlay_and_a_geojson_per_image(nuclei_run, tmp_path):
    images = _images(nuclei_run, tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["predict", "--run", "dig", "--runs-dir", str(nuclei_run.runs), "--out", str(out)]
        + ["--json", *images],
    )
    assert result.exit_code == 0, result.output[-2000:]
    report = json.loads(result.stdout)
    assert report["postproc"].startswith("default")
    for row, image in zip(report["images"], images, strict=True):
        assert row["image"] == image
        overlay = np.asarray(Image.open(row["overlay"]))
        assert overlay.shape == (64, 64, 3)
        collection = json.loads(Path(row["geojson"]).read_text())
        assert collection["type"] == "FeatureCollection"
        assert len(collection["features"]) == row["nuclei"] == sum(row["types"].values())
        for feature in collection["features"]:
            assert feature["properties"]["objectType"] == "detection"
            assert feature["properties"]["classification"]["name"] in row["types"]
    table = runner.invoke(
        app, ["predict", "--run", "dig", "--runs-dir", str(nuclei_run.runs), images[0]]
    )
    assert table.exit_code == 0 and "Neopl" in table.stdout
    assert (nuclei_run.run.root / "predict" / "tile0.geojson").is_file()  # default --out


def test_bad_images_and_colliding_names_fail_before_anything_is_written(nuclei_run, tmp_path):
    images = _images(nuclei_run, tmp_path / "in")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["predict", "--run", "dig", "--runs-dir", str(nuclei_run.runs), "--out", str(out)]
    result = runner.invoke(app, [*args, images[0], str(broken)])
    assert result.exit_code == 3 and "broken.png" in result.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "tile0.png").write_bytes(Path(images[0]).read_bytes())
    clash = runner.invoke(app, [*args, images[0], str(other / "tile0.png")])
    assert clash.exit_code == 2 and "tile0" in clash.stderr
    assert not out.exists()
