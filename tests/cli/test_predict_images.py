"""Issue 15, point 4: inputs read as they are. A 16-bit grayscale TIFF is predicted on its
pixels scaled over the full 16-bit range (it used to become all white); a float TIFF is refused
naming the file, its mode and bit depth, before the model loads."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cellbench.cli.app import app
from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]
runner = CliRunner()


def test_16bit_tiff_is_scaled_and_float_tiff_refused(nuclei_run, tmp_path):
    from cellbench.data.store import open_fold

    gray = np.asarray(open_fold(nuclei_run.store, 3).images[0]).mean(axis=2)
    sixteen = tmp_path / "tile16.tif"
    values = (gray * 257).astype(np.uint16)  # the whole 16-bit range: Pillow clipped it to 255
    Image.fromarray(values).save(sixteen)
    base = ["predict", "--run", "dig", "--runs-dir", str(nuclei_run.runs), "--json"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "out"), str(sixteen)])
    assert result.exit_code == 0, result.output[-2000:]
    (row,) = json.loads(result.stdout)["images"]
    overlay = np.asarray(Image.open(row["overlay"]))
    untouched = (overlay == overlay[..., :1]).all(axis=2)  # gray: not an outline pixel
    expected = np.round(values.astype(np.float64) * 255 / 65535)
    assert untouched.any() and np.array_equal(overlay[..., 0][untouched], expected[untouched])

    floating = tmp_path / "tile32.tif"
    Image.fromarray(gray.astype(np.float32)).save(floating)
    refused = runner.invoke(app, [*base, str(floating)])
    assert refused.exit_code == 3
    assert f"{floating}: F image (32-bit float)" in refused.stderr.replace("\n", "")
