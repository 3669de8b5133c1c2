"""The training engine against a plain hand-written PyTorch loop (seeds/003 style), on CPU.

Same data (a generated shapes dataset through the same datasets), same model (simple_cnn), same
optimizer settings (AdamW, constant lr), same seed, same number of epochs; the plain loop validates
every epoch and saves its best model like seeds/003. The engine additionally writes last.pt,
history.csv, events.jsonl, runs its checks, and so on. Runs alternate (plain, engine, plain, ...)
until each side has run for ``--seconds`` in total (default 25 s, at least 3 runs each), and the
training throughput (optimizer steps per second of wall time, everything included) is compared.
Goal: engine / plain time per step <= 1.05.

    python benchmarks/bench_engine.py [--seconds 25] [--epochs 3] [--per-class 300] [--threads N]
    python benchmarks/bench_engine.py --quick      # a few seconds: a smoke run, not a measurement

On a shared machine, other processes make single runs swing widely: the best (max) and median
steps/s over the runs are both shown; trust the max, and the ratio only with many runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cellbench.config import load_config
from cellbench.data.classify.dataset import build_classification_data
from cellbench.data.classify.shapes import write_shapes_dataset
from cellbench.engine.session import TrainRequest, train
from cellbench.models import create_model


def overrides(data: Path, epochs: int) -> list[str]:
    return [
        f"data.path={data}",
        "data.image_size=32",
        "data.augment=false",
        "model.name=simple_cnn",
        f"train.epochs={epochs}",
        "train.batch_size=32",
        "train.lr=0.001",
        "train.weight_decay=0.0",
        "train.scheduler=none",
        "train.log_every=50",
        "train.seed=0",
    ]


def plain_loop(data: Path, epochs: int, out: Path) -> tuple[float, int]:
    """seeds/003 section 7.1, with the datasets and the model cellbench uses; (seconds, steps)."""
    started = time.perf_counter()
    config = load_config(overrides=overrides(data, epochs))
    splits = build_classification_data(config)
    torch.manual_seed(0)
    model = create_model(config.model, num_classes=splits.num_classes, in_chans=3)
    train_loader = DataLoader(splits.train, batch_size=32, shuffle=True)
    val_loader = DataLoader(splits.val, batch_size=32, shuffle=False)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    best_val_loss = float("inf")
    steps = 0
    for epoch in range(epochs):
        model.train()
        train_loss = 0.0
        for images, labels in train_loader:
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            steps += 1
        model.eval()
        val_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for images, labels in val_loader:
                outputs = model(images)
                val_loss += criterion(outputs, labels).item()
                correct += (outputs.argmax(1) == labels).sum().item()
                total += labels.size(0)
        val_loss /= len(val_loader)
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            torch.save(
                {"epoch": epoch, "model_state_dict": model.state_dict(),
                 "optimizer_state_dict": optimizer.state_dict(), "val_loss": val_loss},
                out / "best_model.pth",
            )  # fmt: skip
    return time.perf_counter() - started, steps


def engine(data: Path, epochs: int, runs: Path, index: int) -> tuple[float, int]:
    """A cellbench training of the same recipe; (seconds, steps)."""
    started = time.perf_counter()
    request = TrainRequest(overrides=overrides(data, epochs), run=f"bench-{index}", runs_dir=runs)
    _, result = train(request)
    assert result.status == "completed", result.reason
    return time.perf_counter() - started, int(result.metrics["global_step"])


def report(name: str, runs: list[tuple[float, int]]) -> float:
    """Print one side's numbers; returns its steps/s over all runs."""
    total_s = sum(t for t, _ in runs)
    rates = [n / t for t, n in runs]
    overall = sum(n for _, n in runs) / total_s
    print(
        f"{name:>6}: {len(runs)} runs, {total_s:.1f} s, {runs[0][1]} steps/run · steps/s "
        f"overall {overall:.1f}, max {max(rates):.1f}, median {statistics.median(rates):.1f}"
    )
    return overall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="measured time per side")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: ~1 s per side")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.epochs, args.per_class, args.min_runs = 1.0, 1, 60, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "shapes"
        write_shapes_dataset(data, n_per_class=args.per_class, image_size=32, seed=0)
        plain_out = tmp / "plain"
        plain_out.mkdir()
        plain_loop(data, 1, plain_out)  # warm-up: imports, allocator, file cache
        engine(data, 1, tmp / "runs", -1)
        plain_runs: list[tuple[float, int]] = []
        engine_runs: list[tuple[float, int]] = []
        i = 0
        while (
            min(len(plain_runs), len(engine_runs)) < args.min_runs
            or sum(t for t, _ in plain_runs) < args.seconds
            or sum(t for t, _ in engine_runs) < args.seconds
        ):
            plain_runs.append(plain_loop(data, args.epochs, plain_out))
            engine_runs.append(engine(data, args.epochs, tmp / "runs", i))
            print(f"run {i}: plain {plain_runs[-1][0]:.2f} s · engine {engine_runs[-1][0]:.2f} s")
            i += 1
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{4 * args.per_class} images, {args.epochs} epochs, simple_cnn, batch 32"
    )
    plain_rate = report("plain", plain_runs)
    engine_rate = report("engine", engine_runs)
    best_ratio = max(r for r in (n / t for t, n in plain_runs)) / max(n / t for t, n in engine_runs)
    print(
        f" ratio engine/plain time per step: overall {plain_rate / engine_rate:.3f}, "
        f"best runs {best_ratio:.3f} (goal <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
