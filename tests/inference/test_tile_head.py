"""``predict --run NUCLEI --organ-run ORGAN SLIDE``: each slide tile's tissue and confidence from
the organ head, reading the CLS of the nuclei run's own backbone pass.

A tiny nuclei run and a tiny organ run learn from the same feature store (one tiny random ViT);
a second organ run learns from features of the same ViT with other weights. The decisions are
checked against the organ run's own predictor on the same tile pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from tests.helpers_nuclei_run import make_nuclei_run
from tests.helpers_slides import mosaic, write_pyramid

runner = CliRunner()
MPP = 0.25


def _train_organ(features: Path, runs: Path, name: str) -> None:
    from cellbench.engine.session import TrainRequest, train

    sets = ["task=organ", f"data.features={features}", "organ.target=family"]
    sets += ["train.epochs=3", "train.amp=off"]
    _, result = train(TrainRequest(overrides=sets, run=name, runs_dir=runs))
    assert result.status == "completed", result.reason


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``dig`` (nuclei) and ``organ`` on the same features; ``other`` on another backbone's."""
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    base = make_nuclei_run(tmp_path_factory.mktemp("organ-slide"), 10, 1)
    _train_organ(base.features, base.runs, "organ")
    # ten tiles a fold calibrate to a temperature near its upper bound (every tile ~1/5); a
    # sharper one, not 1.0 (what a run without calibration gets), makes a decision that skips
    # the temperature or reads another CLS show
    metrics_file = base.runs / "0002-organ" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["calibration"]["temperature"] = 0.8
    metrics_file.write_text(json.dumps(metrics))
    profile = yaml.safe_load((base.root / "tiny-vit.yaml").read_text())
    # the same profile (name, preprocessing), other weights
    other_profile = base.root / "other" / "tiny-vit.yaml"
    other_profile.parent.mkdir()
    other_profile.write_text(yaml.safe_dump({**profile, "seed": 7}))
    backbone = build_backbone(str(other_profile), None, device="cpu")
    features, _ = extract_features(base.store, backbone, tag="other", batch_size=8)
    _train_organ(features, base.runs, "other")
    return base


@pytest.fixture(scope="module")
def slide(runs, tmp_path_factory):
    image = mosaic(runs.store, 2, 2, background=1)
    return write_pyramid(tmp_path_factory.mktemp("organ-slide-file") / "case.tif", image, MPP)


def _predict(runs, *args):
    command = ["predict", "--run", "dig", "--runs-dir", str(runs.runs), *map(str, args)]
    return runner.invoke(app, command)


def _tile_pixels(runs, slide) -> dict[str, np.ndarray]:
    """Each tissue tile's pixels as the slide pipeline reads them."""
    from cellbench.inference import load_model
    from cellbench.inference.slide import plan_slide
    from cellbench.inference.tiling import read_tile

    plan = plan_slide(load_model(runs.run), slide)
    try:
        return {t.key: read_tile(plan.reader, plan.geometry, t) for t in plan.tiles}
    finally:
        plan.reader.close()


def test_each_tile_gets_the_organ_predictors_decision_in_the_outputs(runs, slide, tmp_path):
    import pyarrow.parquet as pq

    import cellbench

    out = tmp_path / "out"
    result = _predict(runs, slide, "--organ-run", "organ", "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output[-3000:]
    folder = out / "case"
    summary = json.loads((folder / "summary.json").read_text())
    tiles = pq.read_table(folder / "case.tiles.parquet").to_pylist()
    assert len((folder / "case.tiles.csv").read_text().splitlines()) == len(tiles) + 1
    assert [t["index"] for t in tiles] == list(range(summary["tiles"]["with_tissue"]))

    # the decision of each tile is what the organ run predicts on the same pixels
    organ = cellbench.load_model("organ", runs_dir=runs.runs)
    pixels = _tile_pixels(runs, slide)
    assert [t["tile"] for t in tiles] == list(pixels)
    for row in tiles:
        expected = cellbench.predict(organ, Image.fromarray(pixels[row["tile"]]))
        assert row["tissue"] == expected.label, row
        assert row["confidence"] == pytest.approx(expected.probability, abs=2e-4)
        t = 64 - 2 * 16  # stride of 64-px tiles with 16-px margins, at the slide's µm/px
        assert row["size_px"] == 64
        r, c = map(int, row["tile"].split(","))
        assert (row["core_x_px"], row["core_y_px"]) == (c * t, r * t)
        assert (row["x_px"], row["y_px"]) == (c * t - 16, r * t - 16)

    # nuclei counted in each tile core, and each nucleus carries its tile's decision
    nuclei = pq.read_table(folder / "case.parquet").to_pylist()
    by_tile = {row["tile"]: row for row in tiles}
    assert sum(t["nuclei"] for t in tiles) == summary["objects"] == len(nuclei) > 0
    for tile in tiles:
        assert tile["nuclei"] == sum(n["tile"] == tile["tile"] for n in nuclei)
    for n in nuclei:
        assert n["tissue"] == by_tile[n["tile"]]["tissue"]
        assert n["tissue_confidence"] == by_tile[n["tile"]]["confidence"]
    features = json.loads((folder / "case.geojson").read_text())["features"]
    for feature, n in zip(features, nuclei, strict=True):
        assert feature["properties"]["tissue"] == n["tissue"]
        assert feature["properties"]["measurements"]["tissue confidence"] == pytest.approx(
            n["tissue_confidence"]
        )

    # QuPath: one tile object per tile core, classified by its tissue
    cores = json.loads((folder / "case.tiles.geojson").read_text())["features"]
    assert len(cores) == len(tiles)
    for feature, row in zip(cores, tiles, strict=True):
        props = feature["properties"]
        assert props["objectType"] == "tile" and props["classification"]["name"] == row["tissue"]
        assert props["measurements"] == {
            "tissue confidence": row["confidence"],
            "nuclei": row["nuclei"],
        }
        x, y = row["core_x_px"], row["core_y_px"]
        assert feature["geometry"]["coordinates"][0][0] == [x, y]
        assert feature["geometry"]["coordinates"][0][2] == [x + 32, y + 32]

    # the organ summary: run, temperature, tiles per tissue, the majority and its share
    metrics = json.loads((runs.runs / "0002-organ" / "metrics.json").read_text())
    decided = summary["organ"]
    assert decided["run"] == "0002-organ"
    assert decided["temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    per_tissue = {}
    for row in tiles:
        per_tissue[row["tissue"]] = per_tissue.get(row["tissue"], 0) + 1
    assert decided["tiles_per_tissue"] == per_tissue
    assert decided["tiles"] == len(tiles)
    assert per_tissue[decided["majority"]] == max(per_tissue.values())
    assert decided["majority_share"] == pytest.approx(max(per_tissue.values()) / len(tiles))
    assert summary["files"]["tiles_csv"].endswith("case.tiles.csv")


def test_the_head_reads_the_decoders_backbone_pass_not_a_second_one(runs, slide):
    from cellbench.inference import load_model
    from cellbench.inference.slide import predict_slide

    model = load_model(runs.run)
    calls = []
    vit = model.model.backbone.model
    handle = vit.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        plain = list(predict_slide(model, slide, batch_size=4))
        passes, tiles = len(calls), sum(calls)
        calls.clear()
        decided = list(predict_slide(model, slide, batch_size=4, organ=runs.runs / "0002-organ"))
    finally:
        handle.remove()
    assert (len(calls), sum(calls)) == (passes, tiles)  # one backbone pass per batch, no more
    assert [n.id for n in decided] == [n.id for n in plain]
    assert all(n.tissue is not None and 0 < n.tissue_confidence <= 1 for n in decided)
    assert all(n.tissue is None for n in plain)


def test_an_organ_run_on_another_backbone_is_refused_before_any_model_work(runs, slide, tmp_path):
    broken = runs.copy(tmp_path / "broken")
    for checkpoint in broken.run.checkpoints.glob("*.pt"):
        checkpoint.unlink()  # loading the nuclei model would fail: the refusal must come first
    out = tmp_path / "out"
    result = _predict(broken, slide, "--organ-run", "other", "--out", out)
    assert result.exit_code == 3, result.output
    line = result.output.strip().splitlines()[-1]
    assert "0003-other" in line and "0001-dig" in line and "weights sha256" in line, line
    assert "profile" not in line.split("(")[1]  # only the weights differ
    assert not out.exists()

    # the Python API refuses it too, before reading a tile
    from cellbench.errors import BadInputError
    from cellbench.inference import load_model
    from cellbench.inference.slide import predict_slide

    with pytest.raises(BadInputError, match="0003-other and --run 0001-dig .*weights sha256"):
        predict_slide(load_model(runs.run), slide, out=out, organ=runs.runs / "0003-other")
    assert not out.exists()


def test_a_run_that_is_not_an_organ_head_is_refused(runs, slide, tmp_path):
    out = tmp_path / "out"
    result = _predict(runs, slide, "--organ-run", "dig", "--out", out)
    assert result.exit_code == 2, result.output
    assert "--organ-run 0001-dig: a 'nuclei' run" in result.output
    assert not out.exists()
    tile = tmp_path / "tile.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tile)
    result = _predict(runs, tile, "--organ-run", "organ", "--out", out)
    assert result.exit_code == 2 and "no slide given" in result.output, result.output


def test_an_interrupted_slide_resumes_to_the_same_decisions_and_bytes(runs, slide, tmp_path):
    from cellbench.inference import load_model
    from cellbench.inference.slide import write_slide
    from cellbench.inference.tile_head import load_tile_head

    model = load_model(runs.run)
    head = load_tile_head("organ", runs.runs)
    options = {"organ": head, "tissue": "none", "batch_size": 4}
    full = write_slide(model, slide, tmp_path / "full", **options)

    def stop_after_seven(done: int, total: int) -> None:
        if done == 7:  # mid-batch: the resumed run batches the tiles differently
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_slide(model, slide, tmp_path / "cut", progress=stop_after_seven, **options)
    journal = tmp_path / "cut" / "case" / ".journal"
    assert list(journal.glob("part-*.parquet")) and not (journal.parent / "summary.json").exists()
    messages = []
    again = write_slide(model, slide, tmp_path / "cut", log=messages.append, **options)
    assert again.summary["tiles"]["resumed_from"] == 7, messages
    assert again.summary["organ"] == full.summary["organ"]
    names = ["case.tiles.csv", "case.tiles.parquet", "case.tiles.geojson", "case.csv"]
    names += ["case.parquet", "case.geojson", "case.overlay.png"]
    for name in names:
        assert (tmp_path / "cut" / "case" / name).read_bytes() == (full.folder / name).read_bytes()

    # a slide finished without the head is predicted again when one is asked for
    plain = write_slide(model, slide, tmp_path / "plain", tissue="none", batch_size=4)
    assert "organ" not in plain.summary
    redone = write_slide(model, slide, tmp_path / "plain", log=messages.append, **options)
    assert not redone.skipped and redone.summary["organ"] == full.summary["organ"]
    assert write_slide(model, slide, tmp_path / "plain", **options).skipped


def test_an_online_features_run_is_checked_once_loaded_and_decides_the_same(runs, slide, tmp_path):
    """An ``--online-features`` nuclei run names no store: its backbone is compared once built.
    Same backbone, same head: the same decisions as the stored-features run's, whatever the
    decoder."""
    import pyarrow.parquet as pq

    from cellbench.inference import load_model
    from cellbench.inference.slide import write_slide
    from cellbench.inference.tile_head import load_tile_head
    from tests.helpers_nuclei_run import make_online_run

    online_run = make_online_run(runs, tmp_path / "online")
    online = load_model(online_run.run)
    stored = load_model(runs.run)
    head = load_tile_head("organ", runs.runs)
    a = write_slide(online, slide, tmp_path / "a", organ=head, batch_size=4)
    b = write_slide(stored, slide, tmp_path / "b", organ=head, batch_size=4)
    columns = ["tile", "tissue", "confidence"]
    tiles_a = pq.read_table(a.folder / "case.tiles.parquet").select(columns).to_pylist()
    assert tiles_a == pq.read_table(b.folder / "case.tiles.parquet").select(columns).to_pylist()

    from cellbench.errors import BadInputError

    with pytest.raises(BadInputError, match="0003-other and --run 0001-online.*weights sha256"):
        write_slide(online, slide, tmp_path / "c", organ=runs.runs / "0003-other")
    assert not (tmp_path / "c").exists()
    # the CLI: no store to compare before loading, the loaded backbone is (exit 3, no output)
    command = ["predict", "--run", "online", "--runs-dir", str(online_run.runs), str(slide)]
    command += ["--organ-run", str(runs.runs / "0003-other"), "--out", str(tmp_path / "d")]
    result = runner.invoke(app, command)
    assert result.exit_code == 3 and "weights sha256" in result.output, result.output
    assert not (tmp_path / "d").exists()


def test_a_tile_whose_head_gives_nan_is_undecided_with_a_null_confidence():
    """Features gone NaN (bad weights) must not write NaN into the tile table, the GeoJSON or
    summary.json: the tile is 'undecided', its confidence null."""
    import math

    from cellbench.inference.slide import UNDECIDED, _decision

    assert _decision(np.array([0.2, 0.8]), ["a", "b"]) == {"tissue": "b", "confidence": 0.8}
    undecided = _decision(np.array([math.nan, math.nan]), ["a", "b"])
    assert undecided == {"tissue": UNDECIDED, "confidence": None}


def test_undecided_tiles_write_null_not_nan_in_every_tile_output(tmp_path):
    from cellbench.inference import slide_outputs

    journal = tmp_path / ".journal"
    writer = slide_outputs.Journal(journal, 0, tiles=True)
    for index, (tissue, confidence) in enumerate([("Colon", 0.9), ("undecided", None)]):
        row = {name: 0.0 for name in ("x_px", "y_px", "size_px", "core_x_px", "core_y_px")}
        row.update(core_width_px=8.0, core_height_px=8.0, index=index, tile=f"t{index}",
                   tissue=tissue, confidence=confidence, nuclei=0)  # fmt: skip
        writer.add(index, [], row)
    writer.commit()
    head = {"run": "organ", "temperature": 1.0, "classes": ["Colon"]}
    out = slide_outputs._tile_outputs(journal, tmp_path, "case", head)
    summary = out["organ"]
    assert summary["mean_confidence_per_tissue"] == {"Colon": 0.9, "undecided": None}
    assert "NaN" not in json.dumps(summary)
    tiles = json.loads((tmp_path / "case.tiles.geojson").read_text())  # valid JSON, no NaN
    assert tiles["features"][1]["properties"]["measurements"]["tissue confidence"] is None
    assert (tmp_path / "case.tiles.csv").read_text().splitlines()[2].count("undecided") == 1


def test_an_organ_run_whose_feature_store_is_gone_is_refused_naming_it(runs, slide, tmp_path):
    """The head's backbone is known only from its store's manifest: without it the head cannot
    be matched to the nuclei run's backbone, so it is refused (exit 3), not trusted."""
    from cellbench.errors import BadInputError
    from cellbench.inference.tile_head import load_tile_head

    manifest = runs.store / "features" / "other" / "manifest.json"
    hidden = manifest.with_name("manifest.json.hidden")
    manifest.rename(hidden)
    try:
        with pytest.raises(BadInputError, match=r"features/other: the run's feature store is gone"):
            load_tile_head(runs.runs / "0003-other")
        out = tmp_path / "out"
        result = _predict(runs, slide, "--organ-run", "other", "--out", out)
        assert result.exit_code == 3, result.output
        # refused earlier, by the run's recorded inputs: one line naming the missing file
        assert "features/other/manifest.json is gone or unreadable" in result.output
        assert not out.exists()
    finally:
        hidden.rename(manifest)
