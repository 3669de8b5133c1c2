"""Gates read a value from a JSON file a phase wrote, every entry of a '*' key or of a glob."""

from __future__ import annotations

import json

from cellbench.workflow.gates import evaluate, gate_files, lookup
from cellbench.workflow.spec import GateSpec


def test_lookup_walks_every_entry_of_a_star():
    data = {"folds": {"1": {"cls_std": 0.8}, "2": {"cls_std": 0.28}}}
    assert lookup(data, "folds.*.cls_std") == [("folds.1.cls_std", 0.8), ("folds.2.cls_std", 0.28)]
    assert lookup(data, "folds.3.cls_std") == []


def test_a_gate_fails_on_the_first_value_out_of_range_and_keeps_them_all(tmp_path):
    report = tmp_path / "check.json"
    report.write_text(json.dumps({"folds": {"1": {"cls_std": 0.77}, "2": {"cls_std": 0.28}}}))
    gate = GateSpec("cls_std", "folds.*.cls_std", output=True, min=0.7, max=0.9,
                    diagnosis="CLS std 0.28: the final norm is missing")  # fmt: skip
    result = evaluate(gate, gate_files(gate, report, []))
    assert not result.ok and result.value == 0.28
    assert result.source.endswith("check.json:folds.2.cls_std")
    assert len(result.values) == 2
    assert "0.28" in result.line() and "final norm is missing" in result.line()


def test_equals_reads_every_file_of_a_glob(tmp_path):
    for k, dtype in ((1, "float32"), (2, "int8")):
        (tmp_path / f"fold{k}").mkdir()
        (tmp_path / f"fold{k}" / "manifest.json").write_text(
            json.dumps({"arrays": {"hv": {"dtype": dtype}}})
        )
    gate = GateSpec("hv_dtype", "arrays.hv.dtype", file=str(tmp_path / "fold*/manifest.json"),
                    equals="float32")  # fmt: skip
    result = evaluate(gate, gate_files(gate, None, []))
    assert not result.ok and result.value == "int8" and "fold2" in result.source


def test_a_missing_file_or_key_fails_and_says_why(tmp_path):
    gate = GateSpec("np_dice", "best.metrics.val_np_dice", run="r", min=0.5)
    missing = evaluate(gate, gate_files(gate, None, [tmp_path]))
    assert not missing.ok and "unreadable" in missing.problem
    (tmp_path / "metrics.json").write_text(json.dumps({"best": {"metrics": {}}}))
    no_key = evaluate(gate, gate_files(gate, None, [tmp_path]))
    assert not no_key.ok and "no key" in no_key.problem
    nan = tmp_path / "metrics.json"
    nan.write_text('{"best": {"metrics": {"val_np_dice": NaN}}}')
    assert not evaluate(gate, [nan]).ok  # NaN is never in range
