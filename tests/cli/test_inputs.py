"""Issue 15, point 2: a run remembers what it trained on. Its feature store re-extracted into the
same tag with another profile seed (other weights) is refused by eval, predict and
``train --resume`` (exit 3, the difference named) unless ``--force``, which eval records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.runs.inputs import INPUTS

runner = CliRunner()


def test_a_re_extracted_feature_store_is_refused_until_forced(tmp_path):
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone
    from tests.helpers_nuclei import NUCLEI_VIT
    from tests.helpers_nuclei_run import make_nuclei_run

    made = make_nuclei_run(tmp_path, tiles=6, epochs=1)
    recorded = json.loads((made.run.root / INPUTS).read_text())
    assert recorded["features"]["weights sha256"] and recorded["features"]["blocks"] == [1, 3]
    runs = ["--runs-dir", str(made.runs)]
    assert runner.invoke(app, ["eval", "--run", "dig", *runs, "--split", "test"]).exit_code == 0

    profile = tmp_path / "tiny-vit.yaml"  # another seed: other random weights, same shapes
    profile.write_text(yaml.safe_dump({**NUCLEI_VIT, "seed": 7}))
    backbone = build_backbone(str(profile), None, device="cpu")
    extract_features(made.store, backbone, tag="tiny", batch_size=8, force=True)

    # as if killed after its epoch (SIGKILL writes no run_end): --resume has work to do
    events = made.run.events.read_text().splitlines(keepends=True)
    made.run.events.write_text("".join(e for e in events if '"run_end"' not in e))
    image = tmp_path / "tile.png"
    Image.fromarray(np.full((64, 64, 3), 180, np.uint8)).save(image)
    for args in (
        ["eval", "--run", "dig", *runs, "--split", "test"],
        ["predict", "--run", "dig", *runs, str(image), "--out", str(tmp_path / "p")],
        ["train", "--run", "dig", *runs, "--resume"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, (args, result.output[-2000:])
        assert "features weights sha256" in result.stderr and "--force" in result.stderr
    assert not (tmp_path / "p").exists()

    forced = runner.invoke(app, ["eval", "--run", "dig", *runs, "--split", "test", "--json"
                                 , "--force"])  # fmt: skip
    assert forced.exit_code == 0, forced.output[-2000:]
    report = json.loads(forced.stdout)
    assert any("weights sha256" in change for change in report["forced_inputs"])
    written = [p for p in report["files"].values() if p.endswith(".json")]
    assert written and all("forced_inputs" in json.loads(Path(p).read_text()) for p in written)
    assert json.loads((made.run.root / INPUTS).read_text())["forced"][0]["action"] == "eval --force"


def test_eval_split_and_fold_contradict(tmp_path):
    from cellbench.runs.store import RunStore
    from tests.cli.test_runs import make_run

    make_run(RunStore(tmp_path), "a")
    result = runner.invoke(
        app, ["eval", "--run", "a", "--runs-dir", str(tmp_path), "--split", "test", "--fold", "2"]
    )
    assert result.exit_code == 2 and "contradict" in result.stderr


def _shapes_run(tmp_path: Path, tiles: int) -> tuple[Path, list[str], list[str]]:
    """A generated shapes dataset and a one-epoch run ``c`` on it: (data, runs args, synth)."""
    from tests.sweep.conftest import TINY

    data, runs = tmp_path / "shapes", ["--runs-dir", str(tmp_path / "runs")]
    synth = ["data", "synth", "--kind", "shapes", "--out", str(data), "--tiles", str(tiles)]
    assert runner.invoke(app, [*synth, "--size", "16"]).exit_code == 0
    sets = [a for text in TINY for a in ("--set", text)]
    trained = runner.invoke(
        app, ["train", "--profile", "demo", "--data", str(data), *sets, "--epochs", "1"]
        + ["--run", "c", *runs],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output[-2000:]
    return data, runs, synth


def test_a_classification_runs_regenerated_dataset_is_refused(tmp_path):
    """The source of a classification run, where it has a cellbench manifest (shapes.json)."""
    data, runs, synth = _shapes_run(tmp_path, 8)
    assert runner.invoke(app, ["eval", "--run", "c", *runs]).exit_code == 0
    regenerated = runner.invoke(app, [*synth, "--size", "16", "--seed", "3", "--force"])
    assert regenerated.exit_code == 0, regenerated.output
    result = runner.invoke(app, ["eval", "--run", "c", *runs])
    assert result.exit_code == 3 and "data shapes.json sha256" in result.stderr
    assert runner.invoke(app, ["eval", "--run", "c", *runs, "--force"]).exit_code == 0


def test_images_added_to_a_classification_dataset_are_refused_by_eval_not_predict(tmp_path):
    """Images added after training move others between the carved splits (a training image
    into test): eval is refused naming the image list, unless --force. predict is not: the
    training data does not change a prediction."""
    import shutil

    data, runs, _ = _shapes_run(tmp_path, 12)
    recorded = json.loads((tmp_path / "runs" / "0001-c" / INPUTS).read_text())["data"]
    assert recorded["images"] == sum(1 for _ in data.rglob("*.png"))
    assert runner.invoke(app, ["eval", "--run", "c", *runs, "--split", "test"]).exit_code == 0
    first = sorted((data / "circle").glob("*.png"))[0]
    for k in range(8):
        shutil.copy(first, data / "circle" / f"aa_extra{k}.png")
    result = runner.invoke(app, ["eval", "--run", "c", *runs, "--split", "test"])
    assert result.exit_code == 3, result.output[-2000:]
    assert "data images" in result.stderr and "image list sha256" in result.stderr
    predicted = runner.invoke(app, ["predict", "--run", "c", *runs, str(first)])
    assert predicted.exit_code == 0, predicted.output[-2000:]
    forced = ["eval", "--run", "c", *runs, "--split", "test", "--force"]
    assert runner.invoke(app, forced).exit_code == 0
