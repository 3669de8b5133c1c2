"""Nuclei decoder training: the engine against a plain PyTorch loop, and memory against store size.

1. Speed. The same decoder (nuclei-demo widths on vit-demo tokens), the same data (one
   generated store, its vit-demo feature store, through ``NucleiTokenDataset``), the same loss
   terms, optimizer (AdamW, constant lr), batch and seed. The plain loop trains an epoch and runs
   the val fold through the model with the loss, like any hand-written loop; the engine does the
   same plus its run folder (events, history, checkpoints), checks and per-epoch metrics (NP
   Dice, HV MSE, NT accuracy; bPQ off: ``eval.pq_every=0``, post-processing is not the loop).
   Runs alternate (plain, engine, plain, ...) for ``--seconds`` per side. Goal: engine / plain
   time per step <= 1.05.
2. Memory. Peak RSS of a whole engine training (fresh subprocess each) on a generated store and
   on one 4 times larger (4 x the tiles and 4 x the tokens). Tokens are read from the memory-
   mapped store one tile at a time, so the goal is a ratio <= 1.2. So that the store weighs
   against the ~1 GB a torch process starts with, these stores hold wider tokens (a random
   4-block ViT of width 384: 192 KB per tile instead of vit-demo's 48 KB) and the decoder is
   narrow (the measurement is of the data path); the ratio a loader holding the tokens in RAM
   would give is printed beside it.

    python benchmarks/bench_nuclei_train.py [--tiles 48] [--size 64] [--seconds 30]
    python benchmarks/bench_nuclei_train.py --quick        # smoke run, not a measurement

On a shared machine the best (max) steps/s of each side is the number to trust.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

WIDTHS = "[32,32,16,16]"
STEM = "[16,16]"
WIDE_VIT = {  # the memory measurement's backbone: 4 blocks of 384 on an 8 x 8 grid
    "model": "vit_tiny_patch16_224",
    "seed": 0,
    "kwargs": {"img_size": 128, "patch_size": 16, "embed_dim": 384, "depth": 4, "num_heads": 6},
    "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": 128},
    "blocks": [1, 2, 3, 4],
    "expect": {"cls_std": [0.1, 10.0]},
}


def make_store(root: Path, tiles: int, size: int, backbone_name: str = "vit-demo") -> Path:
    """Generated folds 1-2 (train, val of split 1), prepared, with the backbone's features."""
    from cellbench.data.prepare import prepare
    from cellbench.data.synth import synth
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    synth(root / "raw", folds=2, tiles=tiles, seed=0, size=size)
    prepare(root / "raw", root / "store", folds=[1, 2])
    if backbone_name == "wide":
        import yaml

        profile = root / "wide-vit.yaml"
        profile.write_text(yaml.safe_dump(WIDE_VIT))
        backbone_name = str(profile)
    backbone = build_backbone(backbone_name, device="cpu")
    path, _ = extract_features(root / "store", backbone, tag="bench")
    return path


def overrides(features: Path, epochs: int, narrow: bool = False) -> list[str]:
    return [
        "task=nuclei",
        f"data.features={features}",
        "data.augment=false",
        f"nuclei.widths={'[8,8,8,8]' if narrow else WIDTHS}",
        f"nuclei.stem={'[8,8]' if narrow else STEM}",
        "model.drop_rate=0.0",
        f"train.epochs={epochs}",
        "train.batch_size=8",
        "train.optimizer=adamw",
        "train.lr=0.001",
        "train.weight_decay=0.0",
        "train.scheduler=none",
        "train.warmup_epochs=0",
        "train.amp=off",
        "train.log_every=50",
        "train.seed=0",
        "eval.pq_every=0",
    ]


def plain_loop(features: Path, epochs: int) -> tuple[float, int]:
    """A hand-written loop over the engine's own datasets and decoder; (seconds, steps)."""
    import dataclasses

    from cellbench.config import load_config
    from cellbench.tasks import get_task
    from cellbench.tasks.nuclei.decoder import NucleiDecoder
    from cellbench.tasks.nuclei.losses import NucleiLoss

    started = time.perf_counter()
    config = load_config(overrides=overrides(features, epochs))
    data = get_task("nuclei").build_data(config)
    torch.manual_seed(0)
    blocks, _, _, dim = data.token_shape
    model = NucleiDecoder(dim, blocks, config.nuclei.widths, config.nuclei.stem)
    criterion = NucleiLoss(dataclasses.asdict(config.nuclei.loss))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    train_loader = DataLoader(data.train, batch_size=8, shuffle=True)
    val_loader = DataLoader(data.val, batch_size=8, shuffle=False)
    steps = 0
    for _ in range(epochs):
        model.train()
        for batch in train_loader:
            out = model(tokens=batch["tokens"], image=batch["image"])
            loss = criterion(out, batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            val_loss = 0.0
            for batch in val_loader:
                out = model(tokens=batch["tokens"], image=batch["image"])
                val_loss += float(criterion(out, batch)["loss"])
    return time.perf_counter() - started, steps


def engine(
    features: Path, epochs: int, runs: Path, name: str, narrow: bool = False
) -> tuple[float, int]:
    from cellbench.engine.session import TrainRequest, train

    started = time.perf_counter()
    request = TrainRequest(overrides=overrides(features, epochs, narrow), run=name, runs_dir=runs)
    _, result = train(request)
    assert result.status == "completed", result.reason
    return time.perf_counter() - started, int(result.metrics["global_step"])


def peak_rss_child(features: Path, runs: Path) -> None:
    """In a fresh process: one engine training, then print the peak RSS (MB) as JSON."""
    engine(features, 1, runs, "rss", narrow=True)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kb / 1024}))


def peak_rss(features: Path, runs: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(features), "--runs", str(runs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])


def _rate(runs: list[tuple[float, int]]) -> tuple[float, float, float]:
    rates = [n / t for t, n in runs]
    return sum(n for _, n in runs) / sum(t for t, _ in runs), max(rates), statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=48, help="generated tiles per fold (1x)")
    parser.add_argument("--size", type=int, default=64, help="tile side")
    parser.add_argument("--rss-tiles", type=int, default=160, help="tiles per fold (1x), memory")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per side")
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        peak_rss_child(args.rss_child, args.runs)
        return 0
    if args.quick:
        args.tiles, args.seconds, args.min_runs, args.rss_tiles = 12, 1.0, 1, 12
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_speed:
            speed(tmp, args)
        if not args.skip_rss:
            memory(tmp, args)
    return 0


def speed(tmp: Path, args) -> None:
    small = make_store(tmp / "x1", args.tiles, args.size)
    plain_loop(small, 1)  # warm-up: imports, allocator, page cache
    engine(small, 1, tmp / "runs", "warm")
    plain_runs, engine_runs = [], []
    i = 0
    while (
        min(len(plain_runs), len(engine_runs)) < args.min_runs
        or sum(t for t, _ in plain_runs) < args.seconds
        or sum(t for t, _ in engine_runs) < args.seconds
    ):
        plain_runs.append(plain_loop(small, 1))
        engine_runs.append(engine(small, 1, tmp / "runs", f"speed-{i}"))
        print(f"run {i}: plain {plain_runs[-1][0]:.2f} s · engine {engine_runs[-1][0]:.2f} s")
        i += 1
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tiles} tiles per "
        f"fold of {args.size} px, vit-demo tokens, decoder widths {WIDTHS} stem {STEM}, batch 8"
    )
    p_all, p_max, _ = _rate(plain_runs)
    e_all, e_max, _ = _rate(engine_runs)
    for name, runs in (("plain", plain_runs), ("engine", engine_runs)):
        overall, best, median = _rate(runs)
        print(
            f"{name:>6}: {len(runs)} epochs · steps/s overall {overall:.2f}, max {best:.2f}, "
            f"median {median:.2f}"
        )
    print(
        f" ratio engine/plain time per step: overall {p_all / e_all:.3f}, best runs "
        f"{p_max / e_max:.3f} (goal <= 1.05)"
    )


def memory(tmp: Path, args) -> None:
    small = make_store(tmp / "m1", args.rss_tiles, args.size, "wide")
    large = make_store(tmp / "m4", 4 * args.rss_tiles, args.size, "wide")
    mb = [sum(f.stat().st_size for f in s.glob("fold*/tokens.npy")) / 2**20 for s in (small, large)]
    rss1 = peak_rss(small, tmp / "rss1")
    rss4 = peak_rss(large, tmp / "rss4")
    in_ram = (rss1 + mb[1] - mb[0]) / rss1
    print(
        f"peak RSS of a training: {rss1:.0f} MB with {mb[0]:.0f} MB of tokens, {rss4:.0f} MB with "
        f"{mb[1]:.0f} MB (4x the tiles): ratio {rss4 / rss1:.3f} (goal <= 1.2; tokens held in "
        f"RAM would give about {in_ram:.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
