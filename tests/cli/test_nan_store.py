"""Issue 15, point 6: a NaN in a feature store is a data error. ``train`` refuses the store
(exit 3) before a run folder exists, naming the fold and the row, as docs/features.md says."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()


def test_train_refuses_a_store_with_nan_tokens_before_any_run_exists(tmp_path):
    from tests.helpers_nuclei import make_nuclei_features, nuclei_overrides

    features = make_nuclei_features(tmp_path, tiles=8)
    tokens = np.load(features / "fold1" / "tokens.npy", mmap_mode="r+")
    tokens[2, 0, 1, 1, 3] = np.nan  # one value of tile 2, after extraction checked it
    tokens.flush()
    del tokens
    sets = [a for s in nuclei_overrides(features, "data.family=null") for a in ("--set", s)]
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", *sets, "--run", "nan", "--runs-dir", str(runs)])
    assert result.exit_code == 3, result.output[-2000:]
    assert "fold 1" in result.stderr and "row 2" in result.stderr
    assert "tokens.npy" in result.stderr and "non-finite loss" not in result.output
    assert not runs.exists() or not any(runs.iterdir())
