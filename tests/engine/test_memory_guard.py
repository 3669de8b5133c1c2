"""The memory guard's suggestion, and a CUDA out-of-memory error ending a run cleanly.

CI has no GPU: the out-of-memory path is driven by a test-only timm model whose forward raises
``torch.cuda.OutOfMemoryError`` (the exception PyTorch's CUDA allocator raises) from the second
epoch on, so the first epoch's checkpoint must survive it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellbench.config import TrainConfig
from cellbench.engine import memory_guard
from cellbench.engine.history import read_history
from cellbench.engine.session import TrainRequest, train
from cellbench.runs.events import read_events

OOM_MODEL = "cellbench_test_oom_cnn"


class OomAfterFirstEpoch(nn.Module):
    """A tiny classifier whose forward runs out of (pretend) CUDA memory after 3 training steps."""

    calls = 0

    def __init__(self, num_classes: int = 4, in_chans: int = 3, **_):
        super().__init__()
        self.head = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            type(self).calls += 1
            if type(self).calls > 3:  # the 3 batches of epoch 1 pass
                raise torch.cuda.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 11.5 GiB total)"
                )
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module", autouse=True)
def _register():
    from timm.models import register_model

    if OOM_MODEL not in __import__("timm").list_models(OOM_MODEL):

        def cellbench_test_oom_cnn(pretrained=False, **kwargs):
            return OomAfterFirstEpoch(**kwargs)

        register_model(cellbench_test_oom_cnn)


def test_suggestion_keeps_the_effective_batch():
    assert memory_guard.suggest(64, 1, 3.0) == (16, 4)
    assert memory_guard.suggest(64, 2, 0.8) == (64, 2)  # fits: unchanged
    assert memory_guard.suggest(2, 1, 10.0) == (1, 2)  # never below a batch of 1
    train = TrainConfig(batch_size=32, grad_accum_steps=2)
    reason = memory_guard.oom_reason(train, world=2)
    assert "train.batch_size=16" in reason and "train.grad_accum_steps=4" in reason
    assert "effective batch 128 kept" in reason


def test_the_guard_stays_silent_off_cuda():
    assert memory_guard.check(torch.device("cpu"), TrainConfig(), 1, 0.5) is None


def test_out_of_memory_ends_the_run_failed_with_a_suggestion_and_last_pt_intact(
    tmp_path, tiny_overrides
):
    OomAfterFirstEpoch.calls = 0
    request = TrainRequest(
        overrides=tiny_overrides(f"model.name={OOM_MODEL}", "model.args={}"),
        run="oom",
        runs_dir=tmp_path / "runs",
    )
    paths, result = train(request)
    assert result.status == "failed"
    assert result.reason.startswith("CUDA out of memory at batch 16: try --set train.batch_size=8")
    assert "train.grad_accum_steps=2" in result.reason
    end = read_events(paths.events, "run_end")[-1]
    assert end["status"] == "failed" and end["reason"] == result.reason
    assert torch.load(paths.last_checkpoint, weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in read_history(paths.history)] == [1]


def test_out_of_memory_on_the_command_line_is_one_line_and_exit_1(tmp_path, shapes_dir):
    from typer.testing import CliRunner

    from cellbench.cli.app import app

    OomAfterFirstEpoch.calls = 0
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(shapes_dir),
            "--model",
            OOM_MODEL,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--set",
            "data.image_size=32",
            "--set",
            "train.batch_size=16",
            "--epochs",
            "3",
        ],
    )
    assert result.exit_code == 1
    assert "CUDA out of memory at batch 16" in result.output
    assert "Traceback" not in result.output
