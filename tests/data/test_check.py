"""``data check``: each silent data bug of the seeds is an error finding naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()


def _check(path: Path, *extra: str):
    return runner.invoke(app, ["data", "check", str(path), *extra])


def _resave(path: Path, fn) -> None:
    np.save(path, fn(np.load(path)))


def _hv_out_of_range(store):
    _resave(store / "fold1" / "hv.npy", lambda a: a * 1.5)
    return "hv.npy", "hv-range"


def _hv_int8(store):
    _resave(store / "fold1" / "hv.npy", lambda a: (a * 127).astype(np.int8))
    return "hv.npy", "dtype"


def _images_int8(store):
    _resave(store / "fold1" / "images.npy", lambda a: a.astype(np.int8))
    return "images.npy", "dtype"


def _types_above_5(store):
    def bump(t):
        t[t == 1] = 6  # e.g. the background channel taken as a class
        return t

    _resave(store / "fold2" / "types.npy", bump)
    return "types.npy", "types-range"


def _types_disagree(store):
    def clear(t):
        t[:] = 0
        return t

    _resave(store / "fold2" / "types.npy", clear)
    return "types.npy", "types-inst"


def _rounded_centroid_hv(store):
    """HoVer-Net-style HV (rounded centroid) differs from the store's convention."""
    inst = np.load(store / "fold3" / "inst.npy")
    hv = np.load(store / "fold3" / "hv.npy")
    tile = int(np.argmax(inst.reshape(len(inst), -1).max(1)))
    m = inst[tile] == 1
    ys, xs = np.nonzero(m)
    d = xs - np.round(xs.mean())
    hv[tile, 0][m] = np.where(d < 0, d / max(1, -d.min()), d / max(1, d.max()))
    np.save(store / "fold3" / "hv.npy", hv)
    return "hv.npy", "hv-convention"


def _unknown_tissue(store):
    path = store / "fold1" / "tissues.json"
    names = json.loads(path.read_text())
    names[0] = "Brain"
    path.write_text(json.dumps(names))
    return "tissues.json", "tissues"


def _truncated(store):
    path = store / "fold2" / "inst.npy"
    path.write_bytes(path.read_bytes()[:200])
    return "inst.npy", "files"


def _incomplete(store):
    (store / "fold3" / "manifest.json").unlink()
    return "fold3", "incomplete"


@pytest.mark.parametrize(
    "corrupt",
    [
        _hv_out_of_range,
        _hv_int8,
        _images_int8,
        _types_above_5,
        _types_disagree,
        _rounded_centroid_hv,
        _unknown_tissue,
        _truncated,
        _incomplete,
    ],
)
def test_store_errors_exit_1_naming_the_file(store_dir, corrupt):
    name, check = corrupt(store_dir)
    result = _check(store_dir, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert any(f["check"] == check and name in f["message"] for f in errors), errors
    assert len(result.stderr.strip().splitlines()) == 1 and name in result.stderr


def test_clean_store_and_raw_pass_with_notes_only(store_master, raw_master):
    for path in (store_master, raw_master):
        result = _check(path)
        assert result.exit_code == 0, result.output
        assert "0 errors" in result.stdout


def test_raw_background_channel_and_duplicates_are_warnings(raw_dir):
    masks = raw_dir / "Fold 1" / "masks" / "fold1" / "masks.npy"
    _resave(masks, lambda m: np.concatenate([m[..., :5], np.zeros_like(m[..., 5:])], -1))
    images = raw_dir / "Fold 2" / "images" / "fold2" / "images.npy"
    first = np.load(raw_dir / "Fold 1" / "images" / "fold1" / "images.npy")[0]

    def dup(a):
        a[1] = first
        return a

    _resave(images, dup)
    result = _check(raw_dir, "--json")
    assert result.exit_code == 0
    checks = {(f["severity"], f["check"]) for f in json.loads(result.stdout)["findings"]}
    assert ("warning", "background") in checks and ("warning", "duplicates") in checks


@pytest.mark.parametrize(
    "edit, check",
    [
        (lambda p: _resave(p / "Fold 1/images/fold1/images.npy", lambda a: a / 255.0), "range"),
        (lambda p: _resave(p / "Fold 1/masks/fold1/masks.npy", lambda a: a + 0.5), "ids"),
        (lambda p: _resave(p / "Fold 1/masks/fold1/masks.npy", lambda a: a[..., :5]), "files"),
        (lambda p: shutil.rmtree(p / "Fold 2"), None),
    ],
)
def test_raw_problems(raw_dir, edit, check):
    edit(raw_dir)
    result = _check(raw_dir, "--json")
    findings = json.loads(result.stdout)["findings"]
    if check is None:  # a missing fold is worth a warning, not a failure of the others
        assert result.exit_code == 0
        assert any(f["check"] == "folds" and f["fold"] == 2 for f in findings)
    else:
        assert result.exit_code == 1
        assert any(f["check"] == check and f["severity"] == "error" for f in findings)


def test_not_a_dataset(tmp_path):
    result = _check(tmp_path)
    assert result.exit_code == 1 and "no folds found" in result.stderr
    assert _check(tmp_path / "nope").exit_code == 3


def test_markup_in_paths_and_messages_is_printed_verbatim(store_master, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(store_master, tmp_path / "[bold]s")
    result = _check(Path("[bold]s"))
    assert result.exit_code == 0 and "[bold]s: ok" in result.stdout
    _hv_out_of_range(tmp_path / "[bold]s")
    result = _check(Path("[bold]s"))
    assert result.exit_code == 1
    assert "[bold]s/fold1/hv.npy" in result.stdout  # the finding's message, in the table
    assert "[bold]s: failed" in result.stdout
