"""Each named check fires on what it is named for and stays quiet otherwise."""

from __future__ import annotations

import math

import torch

from cellbench.config import ChecksConfig
from cellbench.engine import checks

CFG = ChecksConfig()


def test_input_range():
    assert checks.input_range(torch.rand(2, 3, 4, 4) * 2 - 1, CFG) is None
    raw = checks.input_range(torch.rand(2, 3, 4, 4) * 255, CFG)
    assert raw.severity == "warning" and "0..255" in raw.message
    assert checks.input_range(torch.zeros(2, 3, dtype=torch.uint8), CFG).severity == "error"
    assert "NaN" in checks.input_range(torch.tensor([1.0, math.nan]), CFG).message


def test_initial_loss_against_ln_c():
    assert checks.initial_loss(math.log(10) * 1.1, math.log(10), CFG) is None
    finding = checks.initial_loss(40.0, math.log(10), CFG)
    assert finding.check == "initial_loss" and "ln(C)" in finding.message


def test_no_decrease_and_train_val_gap():
    assert checks.no_decrease([2.0, 1.5, 1.2, 1.0], CFG) is None
    assert checks.no_decrease([2.0, 1.0, 1.1, 1.2, 1.05], CFG).check == "no_decrease"
    assert checks.train_val_gap(0.9, 1.0, CFG) is None
    assert checks.train_val_gap(0.1, 1.0, CFG).check == "train_val_gap"


def test_gpu_memory_and_expect_ranges():
    assert checks.gpu_memory({"peak": None, "total": None}, CFG) is None
    assert checks.gpu_memory({"peak": 95, "total": 100}, CFG).check == "gpu_memory"
    found = checks.expect({"val_accuracy": 0.5}, {"accuracy": [0.8, 1.0]})
    assert [f.check for f in found] == ["expect"]
    assert checks.expect({"val_accuracy": 0.9}, {"accuracy": [0.8, 1.0]}) == []


def test_check_log_reports_once_per_run_when_asked():
    seen = []
    log = checks.CheckLog(seen.append)
    finding = checks.Finding("no_decrease", "warning", "x")
    log.report(finding, once=True)
    log.report(finding, once=True)
    log.report(None)
    assert len(seen) == 1 and log.fired == {"no_decrease"}
