"""``cellbench features extract|check`` from the command line: exit codes, JSON, a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()
# big enough that a fold takes a few seconds on one CPU thread: room to kill it mid-fold
SLOW_VIT = {
    "model": "vit_small_patch16_224",
    "kwargs": {"img_size": 224, "depth": 6, "num_classes": 0},
    "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": 224},
    "blocks": [3, 6],
}


def _extract(store, profile, *extra):
    return runner.invoke(
        app,
        [
            "features",
            "extract",
            "--data",
            str(store),
            "--backbone",
            str(profile),
            "--device",
            "cpu",
            *extra,
        ],
    )


def test_extract_then_check_json(fx_store, tiny_vit, tiny_vit_weights):
    result = _extract(
        fx_store, tiny_vit, "--weights", str(tiny_vit_weights), "--folds", "1", "--json"
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["folds"][0]["status"] == "extracted" and out["folds"][0]["tiles"] == 10
    root = Path(out["store"])
    checked = runner.invoke(app, ["features", "check", str(root), "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["ok"] is True


def test_check_exits_1_on_a_constant_feature(fx_store, tiny_vit):
    assert _extract(fx_store, tiny_vit, "--folds", "2", "--tag", "t").exit_code == 0
    cls = np.load(fx_store / "features" / "t" / "fold2" / "cls.npy", mmap_mode="r+")
    cls[7] = 1.0
    cls.flush()
    del cls
    result = runner.invoke(app, ["features", "check", str(fx_store / "features" / "t")])
    assert result.exit_code == 1
    assert "constant" in result.output
    # one finding is "1 error", not "1 errors"
    assert "1 error," in result.output and "1 errors" not in result.output


def test_bad_usage_and_bad_input_exit_codes(fx_store, tiny_vit, tmp_path):
    assert _extract(fx_store, "no-such-backbone").exit_code == 2
    assert _extract(tmp_path / "missing", tiny_vit).exit_code == 3
    assert _extract(fx_store, tiny_vit, "--weights", str(tmp_path / "w.pth")).exit_code == 3
    assert _extract(fx_store, tiny_vit, "--blocks", "0,1").exit_code == 2
    result = runner.invoke(app, ["features", "check", str(tmp_path)])
    assert result.exit_code == 1 and "not a feature store" in result.output


@pytest.mark.slow
def test_extraction_killed_mid_fold_resumes_to_the_identical_store(fx_store, tmp_path):
    profile = tmp_path / "slow.yaml"
    profile.write_text(yaml.safe_dump(SLOW_VIT))
    args = [
        "--data",
        str(fx_store),
        "--backbone",
        str(profile),
        "--device",
        "cpu",
        "--folds",
        "1",
        "--batch-size",
        "1",
        "--chunk-size",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cellbench", "features", "extract", *args]
    manifest = fx_store / "features" / "killed" / "fold1" / "manifest.json"
    proc = subprocess.Popen(
        [*cmd, "--tag", "killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(manifest.read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the extraction ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = json.loads(manifest.read_text())
    assert partial["complete"] is False and 2 <= partial["done"] < 10
    # the rerun and an uninterrupted reference, in this process on one thread like the child
    import torch

    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backbone = build_backbone(str(profile), device="cpu")
        _, rerun = extract_features(fx_store, backbone, [1], "killed", batch_size=1, chunk_size=1)
        extract_features(fx_store, backbone, [1], "whole", batch_size=1, chunk_size=1)
    finally:
        torch.set_num_threads(threads)
    assert rerun[0].status == "resumed"
    killed, reference = fx_store / "features" / "killed", fx_store / "features" / "whole"
    for name in ("cls.npy", "tokens.npy", "tissues.json"):
        assert (killed / "fold1" / name).read_bytes() == (reference / "fold1" / name).read_bytes()
    a = json.loads((killed / "fold1" / "manifest.json").read_text())
    b = json.loads((reference / "fold1" / "manifest.json").read_text())
    for volatile in ("created", "finished"):
        a.pop(volatile), b.pop(volatile)
    assert a == b


def test_check_on_a_data_store_says_it_is_one(fx_store):
    """Issue 15, point 8: it said "no manifest.json" of a store that has one."""
    result = runner.invoke(app, ["features", "check", str(fx_store)])
    assert result.exit_code == 1
    assert "a data store, not a feature store" in result.output
    assert "no manifest.json" not in result.output


def test_extract_into_a_busy_tag_names_the_feature_store(fx_store, tiny_vit):
    """Issue 15, point 8: the lock message said "writing this run" for a feature store."""
    from cellbench.runs.lock import RunLock

    with RunLock(fx_store / "features" / "busy" / "lock"):
        result = _extract(fx_store, tiny_vit, "--tag", "busy")
    assert result.exit_code == 4
    assert "writing this feature store" in result.stderr and "this run" not in result.stderr


def test_extracted_features_with_nan_warn_at_once(fx_store, tiny_vit, tmp_path):
    """Weights that give NaN (one NaN in the final norm): the store is written and the manifest
    counts the tiles, and extract says so (it printed a table and exit 0 with no word of it)."""
    from safetensors.torch import save_file

    from cellbench.models.backbones import create_vit, load_backbone_profile

    state = create_vit(load_backbone_profile(str(tiny_vit))).state_dict()
    state = {k: v.clone() for k, v in state.items()}
    state["norm.weight"][3] = float("nan")
    weights = tmp_path / "nan.safetensors"
    save_file(state, str(weights))
    result = _extract(fx_store, tiny_vit, "--folds", "1", "--tag", "nan", "--weights", str(weights))
    assert result.exit_code == 0, result.output
    assert "fold 1: 10 of 10 tiles have NaN/Inf features" in result.stderr
    assert "features check" in result.stderr
    listed = _extract(fx_store, tiny_vit, "--folds", "1", "--tag", "nan", "--weights", str(weights),
                      "--json")  # fmt: skip
    fold = json.loads(listed.stdout)["folds"][0]
    assert fold["status"] == "up to date" and fold["nonfinite_tiles"] == 10
    assert "fold 1: 10 of 10" in listed.stderr  # said again for a store already there
