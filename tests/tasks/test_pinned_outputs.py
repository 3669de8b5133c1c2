"""What users see must not move when the code does (issue 16): ``eval --json`` of a tiny
classification run and of a tiny nuclei run, and the PanNuke files that ``eval --export``
writes, are pinned to the values the code gave before tasks became packages.

Run with ``CELLBENCH_WRITE_PINNED=1`` to record them again (only after a change meant to move
them, said in the commit). Paths, times and versions are left out; floats are compared to 1e-6
(a different CPU may round the last digits of a training differently).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app
from tests.helpers_eval import copy_runs, trained_run
from tests.helpers_nuclei_run import nuclei_run

__all__ = ["nuclei_run"]

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_outputs.json"
# fields that name where or when, not what was measured
VOLATILE = {
    "run",
    "files",
    "export",
    "path",
    "created",
    "time",
    "seconds",
    "duration_s",
    "version",
    "cellbench_version",
    "timestamp",
    "source_dir",
    "checkpoint_path",
    "event_written",
}
runner = CliRunner()


def _stable(value):
    """The JSON without paths, times and versions (keys sorted by json.dumps later)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return "<path>"
    return value


def _eval_json(args: list[str]) -> dict:
    result = runner.invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return _stable(json.loads(result.stdout))


def _export_digest(folder: Path) -> dict:
    """Per file of a PanNuke export: shape, dtype, and a hash of the bytes (masks and types)."""
    out = {}
    for path in sorted(folder.rglob("*.npy")):
        array = np.load(path, allow_pickle=False)
        out[path.relative_to(folder).as_posix()] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
        }
    return out


# fields later issues added to eval's JSON on purpose (new information, no number moved): the
# worker processes of the one post-processing pool (#16), undefined-metric warnings (#15)
ADDED_FIELDS = {"postproc_processes", "warnings"}


def _renamed(expected):
    """The fixture as today's names say it: HoVer-Net's fixed [1/4, 1/2, 1/4] blur is a switch
    (``blur``), no longer a Gaussian sigma (``blur_sigma``; #16 item 6, same pixels)."""
    if isinstance(expected, dict):
        out = {k: _renamed(v) for k, v in expected.items() if k != "blur_sigma"}
        if "blur_sigma" in expected:
            out["blur"] = bool(expected["blur_sigma"])
        return out
    if isinstance(expected, list):
        return [_renamed(v) for v in expected]
    return expected


def _assert_close(actual, expected, where: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert sorted(set(actual) - ADDED_FIELDS) == sorted(set(expected) - ADDED_FIELDS), where
        for key in expected:
            _assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-9, nan_ok=True), where
    else:
        assert actual == expected, where


def _nuclei_test_with_low_threshold(runs: Path, export: Path) -> dict:
    """The test fold with hand-frozen post-processing: the tiny run's NP probabilities sit just
    under 0.5 (two epochs) and its HV maps make no marker at the defaults; an NP threshold of
    0.49 and a marker threshold of 0.95 give ~20 nuclei, so watershed, typing, matching and the
    export all see real objects."""
    (frozen,) = runs.glob("*-dig/postproc.json")
    data = json.loads(frozen.read_text())
    data["params"].update(np_threshold=0.49, marker_threshold=0.95)
    frozen.write_text(json.dumps(data))
    args = ["--run", "dig", "--split", "test", "--export", str(export), "--runs-dir", str(runs)]
    return _eval_json(args)


def test_eval_json_and_pannuke_export_are_unchanged(tmp_path, tmp_path_factory, nuclei_run):
    root, _ = copy_runs(trained_run(tmp_path_factory), tmp_path / "classify")
    own = nuclei_run.copy(tmp_path / "nuclei")
    export = tmp_path / "export"
    actual = {
        "classify_test": _eval_json(["--run", "tiny", "--split", "test", "--runs-dir", str(root)]),
        # tuned on val first (the quickstart's path; this tiny run stays at the defaults)
        "nuclei_val_tuned": _eval_json(
            ["--run", "dig", "--split", "val", "--tune-postproc", "--runs-dir", str(own.runs)]
        ),
        "nuclei_test": _nuclei_test_with_low_threshold(own.runs, export),
        "pannuke_export": _export_digest(export),
    }
    if os.environ.get("CELLBENCH_WRITE_PINNED"):
        FIXTURE.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    expected = _renamed(json.loads(FIXTURE.read_text()))
    _assert_close(json.loads(json.dumps(actual)), expected)
