"""Checkpoint files: best.pt before last.pt, best.pt repaired on resume, one-line load errors."""

from __future__ import annotations

import pytest
import torch

from cellbench.engine import checkpoint
from cellbench.engine.checkpoint import (
    checkpoint_epoch,
    load_checkpoint,
    repair_best,
    serialize,
    weights_fingerprint,
    write_epoch_checkpoints,
)
from cellbench.errors import BadInputError, one_line


def _blob(epoch: int, best_epoch: int) -> bytes:
    best = {"metric": "val_loss", "value": 0.1, "epoch": best_epoch}
    return serialize({"model": {"w": torch.full((2,), float(epoch))}, "epoch": epoch, "best": best})


def test_last_pt_is_written_after_best_pt(tmp_path, monkeypatch):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    write_epoch_checkpoints(_blob(1, 1), last, best)
    real = checkpoint.write_checkpoint

    def dies_after_best(path, blob):
        real(path, blob)
        if path.name == "best.pt":
            raise KeyboardInterrupt  # a kill right after best.pt

    monkeypatch.setattr(checkpoint, "write_checkpoint", dies_after_best)
    with pytest.raises(KeyboardInterrupt):
        write_epoch_checkpoints(_blob(2, 2), last, best)
    assert checkpoint_epoch(last) == 1  # the commit point still says epoch 1: resume redoes 2
    assert checkpoint_epoch(best) == 2


def test_repair_best_rewrites_a_stale_best_from_last(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    last.write_bytes(_blob(3, 3))
    best.write_bytes(_blob(2, 2))  # killed between the writes by an older version
    state = torch.load(last, weights_only=True)
    assert repair_best(state, last, best) is True
    assert checkpoint_epoch(best) == 3 and best.read_bytes() == last.read_bytes()
    assert repair_best(state, last, best) is False  # agrees now: untouched


def test_repair_best_leaves_an_older_best_epoch_alone(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    last.write_bytes(_blob(3, 1))  # epoch 1 is the best and best.pt holds it
    best.write_bytes(_blob(1, 1))
    assert repair_best(torch.load(last, weights_only=True), last, best) is False
    assert checkpoint_epoch(best) == 1


class Pickled:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def test_a_pickled_object_checkpoint_fails_on_one_clean_line(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, path)
    with pytest.raises(BadInputError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 300
    assert message.startswith(f"{path}: cannot load checkpoint")
    assert "Pickled" in message and "weights_only=True" in message


def test_one_line_keeps_the_first_meaningful_line_without_colour():
    exc = RuntimeError("\n  \x1b[1mError(s) in loading\x1b[0m state_dict:\n\tsize mismatch ...")
    assert one_line(exc) == "Error(s) in loading state_dict:"
    assert one_line(ValueError("")) == "ValueError"
    long = one_line("x" * 500, limit=50)
    assert len(long) == 50 and long.endswith("…")


def test_fingerprint_covers_batchnorm_buffers():
    # BatchNorm holds a 0-dim int64 buffer (num_batches_tracked): it must hash, and count
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = weights_fingerprint(model)
    model[1].num_batches_tracked += 1
    assert weights_fingerprint(model) != before
