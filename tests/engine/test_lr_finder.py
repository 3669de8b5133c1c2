"""LR range test: documented rule, exact restore, agreement with torch-lr-finder, run outputs."""

from __future__ import annotations

import copy
import json
import math

import matplotlib
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cellbench.engine.lr_finder import SKIP_END, lr_range_test, smooth, suggest_lr

matplotlib.use("Agg")


def _blobs(seed: int = 0, n: int = 2048, dim: int = 16, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5
    labels = torch.randint(0, classes, (n,), generator=g)
    inputs = centers[labels] + torch.randn(n, dim, generator=g)
    return TensorDataset(inputs, labels)


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    loader = DataLoader(_blobs(seed), batch_size=128, shuffle=False)
    return model, loader


def test_smoothing_is_a_bias_corrected_ema():
    # a constant loss stays constant from the first point on: that is what bias correction buys
    assert smooth([2.0, 2.0, 2.0], beta=0.98) == pytest.approx([2.0, 2.0, 2.0])
    values = smooth([1.0, 3.0], beta=0.5)
    assert values[1] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + i * 0.1) for i in range(50)]
    # flat, a steep drop around index 25, a minimum at 35, then a rise
    curve = [
        2.0 - 1.5 / (1 + math.exp(-(i - 25))) + (0.05 * (i - 35) ** 2 if i > 35 else 0)
        for i in range(50)
    ]
    suggestion, min_lr = suggest_lr(lrs, curve)
    assert suggestion == pytest.approx(lrs[25])
    assert min_lr == pytest.approx(lrs[35])


def test_model_and_optimizer_are_restored_exactly():
    model, loader = _problem()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # give the optimizer some state to restore
    for inputs, targets in loader:
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        break
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    result = lr_range_test(model, optimizer, nn.CrossEntropyLoss(), loader, steps=30)
    assert len(result.lrs) >= 10
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    after = optimizer.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]
    for key, state in opt_state["state"].items():
        assert all(torch.equal(state[n], after["state"][key][n]) for n in state)
    assert torch.equal(rng, torch.get_rng_state())


def test_divergence_stops_the_test_early():
    model, loader = _problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = lr_range_test(
        model, optimizer, nn.CrossEntropyLoss(), loader, start_lr=1e-3, end_lr=1e4, steps=80
    )
    assert result.stopped_early and len(result.lrs) < 80


def test_suggestion_agrees_with_torch_lr_finder_within_a_factor_2():
    from matplotlib.figure import Figure
    from torch_lr_finder import LRFinder

    model, loader = _problem()
    start = copy.deepcopy(model.state_dict())
    ours = lr_range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9),
        nn.CrossEntropyLoss(),
        loader,
        start_lr=1e-5,
        end_lr=10,
        steps=100,
    )
    model.load_state_dict(start)
    finder = LRFinder(
        model, torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9), nn.CrossEntropyLoss()
    )
    finder.range_test(loader, start_lr=1e-5, end_lr=10, num_iter=100, step_mode="exp")
    _, theirs = finder.plot(ax=Figure().add_subplot(), suggest_lr=True)
    finder.reset()
    assert ours.suggestion is not None and theirs is not None
    assert 0.5 <= ours.suggestion / theirs <= 2.0, (ours.suggestion, theirs)


def test_fp16_steps_go_through_the_grad_scaler_and_its_state_is_restored():
    model, loader = _problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    # growth every step: each scaler.update() doubles the scale (halves it after an overflow)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)
    before = copy.deepcopy(scaler.state_dict())
    scales = []
    result = lr_range_test(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        loader,
        steps=20,
        autocast=lambda: torch.autocast("cpu", dtype=torch.float16),
        scaler=scaler,
        on_step=lambda i, lr, loss: scales.append(scaler.get_scale()),
    )
    assert len(result.lrs) == 20 and all(math.isfinite(v) for v in result.losses)
    assert scales[0] == 2.0**9 and len(set(scales)) > 1  # the scaler stepped and updated
    assert scaler.state_dict() == before  # and left no trace


def test_cli_lr_find_writes_curve_and_suggestion(tmp_path, tiny_overrides):
    from cellbench.engine.session import TrainRequest, lr_find

    # fp16 on CPU: the run's grad scaler goes into the range test
    overrides = tiny_overrides(
        "train.lr_find.steps=30", "train.lr_find.start_lr=1e-5", "train.amp=fp16"
    )
    paths, result = lr_find(TrainRequest(overrides=overrides, runs_dir=tmp_path / "runs"))
    for name in ("lr_find.csv", "lr_find.png", "lr_find.json"):
        assert (paths.root / name).stat().st_size > 0
    summary = json.loads((paths.root / "lr_find.json").read_text())
    assert summary["suggestion"] == result.suggestion and "steepest" in summary["rule"]
    assert (paths.root / "lr_find.csv").read_text().splitlines()[0] == "step,lr,loss,smoothed"
    assert all(math.isfinite(v) for v in result.losses[:10])
    # a range test is not a training: the run keeps its config and has no checkpoint
    assert paths.config.is_file() and not paths.checkpoints.exists()


def test_suggestion_is_not_the_minimum_when_the_curve_is_steepest_there():
    # a loss that keeps falling faster and faster until it blows up: the steepest smoothed
    # slope sits at the minimum, where training already diverges
    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]
    curve = [2.0 - 0.001 * math.exp(i / 5) if i <= 40 else 50.0 for i in range(60)]
    suggestion, min_lr = suggest_lr(lrs, curve)
    assert min_lr == pytest.approx(lrs[40])
    assert suggestion == pytest.approx(lrs[40 - SKIP_END])
