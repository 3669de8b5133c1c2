"""``release_memory``: garbage collected, CUDA cache emptied when there is one, honest reports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cellbench.engine.reset import NVML_MISSING, gpu_processes, release_memory


class _Cycle:
    def __init__(self) -> None:
        self.me = self  # only the cycle collector can free this


def test_garbage_is_collected() -> None:
    for _ in range(50):
        _Cycle()
    result = release_memory()
    assert result["gc_collected"] >= 50


def test_report_keys_and_note() -> None:
    result = release_memory()
    for key in ("gc_collected", "cuda_available", "cuda_emptied", "devices", "nvml", "message"):
        assert key in result
    assert "returns only when that process exits" in result["note"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU report")
def test_no_gpu_says_so() -> None:
    result = release_memory()
    assert result["cuda_available"] is False and result["cuda_emptied"] is False
    assert result["devices"] == []
    assert "no CUDA GPU" in result["message"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_cache_is_emptied_and_peak_reset() -> None:
    block = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    del block  # freed to PyTorch's cache, still reserved from the driver
    result = release_memory()
    device = result["devices"][0]
    assert result["cuda_emptied"] is True
    assert device["reserved_before"] >= 64 * 1024 * 1024
    assert device["reserved_after"] < device["reserved_before"]
    assert torch.cuda.max_memory_allocated(0) == torch.cuda.memory_allocated(0)


def test_missing_nvml_is_said_plainly(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    report = gpu_processes()
    assert report == {"available": False, "message": NVML_MISSING, "devices": [], "processes": []}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine has an NVML driver")
def test_nvml_without_a_driver_is_said_plainly() -> None:
    report = gpu_processes()
    assert report["available"] is False and report["message"].startswith("NVML unavailable")
    assert report["devices"] == [] and report["processes"] == []


def test_importing_reset_or_the_clean_cli_does_not_import_torch() -> None:
    code = "import sys, cellbench.engine.reset, cellbench.cli.clean; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
