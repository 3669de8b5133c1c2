"""One training on 1 and on 2 processes (``cellbench train --nproc``), and on GPUs against timm.

CPU section (always): the same tiny classification (simple_cnn on generated shapes, batch 8 per
process, augmentation off) trained by ``cellbench train`` with 1 process (accumulation 2) and
with ``--nproc 2`` (gloo, accumulation 1): the same optimizer updates. Each side's optimizer
steps per second are read from the runs' ``step`` events (``samples_per_s`` over the logging
windows, startup excluded), and the launch-to-exit wall time is printed too. On a 2-core machine
this is an overhead figure (the all-reduce, two processes' startup, one thread each), not a
speed claim.

GPU section (only when CUDA is present): the engine against timm's own ``train.py`` on the
same model, batch and precision (``--timm-train PATH``: timm's train.py is not in the wheel; a
checkout of pytorch-image-models). Both train a timm model for a fixed number of steps on
generated images with ``--nproc`` GPUs; images/s of each and their ratio (goal >= 1.0x).

    python benchmarks/bench_distributed.py [--epochs 4] [--per-class 64]
    python benchmarks/bench_distributed.py --timm-train ~/pytorch-image-models/train.py \
        --gpu-model resnet50 --gpu-batch 128 --nproc 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cellbench(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cellbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode:
        sys.exit(f"cellbench {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _rates(run: Path) -> tuple[float, float]:
    """(median samples/s over the step windows, optimizer steps)."""
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    rates = [e["samples_per_s"] for e in events if e["kind"] == "step" and e["samples_per_s"]]
    steps = max((e["step"] for e in events if e["kind"] == "step"), default=0)
    return (statistics.median(rates[1:] or rates) if rates else 0.0), steps


def cpu_section(epochs: int, per_class: int) -> None:
    from cellbench.data.classify.shapes import write_shapes_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shapes_dataset(root / "shapes", n_per_class=per_class, image_size=32, seed=0)
        sets = [
            f"data.path={root / 'shapes'}",
            "data.image_size=32",
            "data.augment=false",
            "model.name=simple_cnn",
            "train.batch_size=8",
            f"train.epochs={epochs}",
            "train.log_every=4",
        ]
        flags = [part for s in sets for part in ("--set", s)]
        runs = root / "runs"
        one = ["train", "--run", "one", "--runs-dir", str(runs), *flags]
        one += ["--set", "train.grad_accum_steps=2"]
        two = ["train", "--nproc", "2", "--run", "two", "--runs-dir", str(runs), *flags]
        wall_one = _cellbench(one, {"OMP_NUM_THREADS": "1"})
        wall_two = _cellbench(two, {"OMP_NUM_THREADS": "1"})
        rate_one, steps_one = _rates(next(runs.glob("*-one")))
        rate_two, steps_two = _rates(next(runs.glob("*-two")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU ({cores} cores), simple_cnn, effective batch 16, {epochs} epochs:")
    print(f"  1 process  x accumulation 2: {rate_one:8.1f} samples/s   wall {wall_one:5.1f} s")
    print(f"  2 processes (gloo)          : {rate_two:8.1f} samples/s   wall {wall_two:5.1f} s")
    print(f"  same optimizer updates: {steps_one} and {steps_two}")
    if rate_one:
        print(f"  2 processes / 1 process: {rate_two / rate_one:.2f}x samples/s (overhead figure)")


def gpu_section(args) -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU section skipped: no CUDA device here")
        return
    if args.timm_train is None or not Path(args.timm_train).is_file():
        print("GPU section skipped: give --timm-train PATH (timm's train.py, from a checkout)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from cellbench.data.classify.shapes import write_shapes_dataset

        n = args.gpu_per_class
        write_shapes_dataset(root / "data", n_per_class=n, image_size=224)
        # timm's train.py reads DATA/train and DATA/validation class folders
        write_shapes_dataset(root / "timm" / "train", n_per_class=n, image_size=224)
        write_shapes_dataset(
            root / "timm" / "validation", n_per_class=n // 4, image_size=224, seed=1
        )
        common = dict(model=args.gpu_model, batch=args.gpu_batch, epochs=args.gpu_epochs)
        sets = [
            f"data.path={root / 'data'}",
            "data.image_size=224",
            f"model.name={common['model']}",
            f"train.batch_size={common['batch']}",
            f"train.epochs={common['epochs']}",
            "train.amp=bf16",
            "train.channels_last=true",
            f"train.compile={'true' if args.compile else 'false'}",
            "data.num_workers=8",
        ]
        flags = [part for s in sets for part in ("--set", s)]
        engine = _cellbench(
            [
                "train",
                "--nproc",
                str(args.nproc),
                "--run",
                "g",
                "--runs-dir",
                str(root / "r"),
                *flags,
            ]
        )
        timm_cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={args.nproc}",
            args.timm_train,
            str(root / "timm"),
            "--model",
            common["model"],
            "-b",
            str(common["batch"]),
            "--epochs",
            str(common["epochs"]),
            "--amp",
            "--amp-dtype",
            "bfloat16",
            "--channels-last",
            "--num-classes",
            "4",
            "--workers",
            "8",
            "--output",
            str(root / "timm-out"),
        ] + (["--torchcompile"] if args.compile else [])
        started = time.perf_counter()
        subprocess.run(timm_cmd, check=True, capture_output=True)
        timm_wall = time.perf_counter() - started
        start = json.loads((next((root / "r").glob("*-g")) / "events.jsonl").open().readline())
    engine_rate = start["train_size"] * common["epochs"] / engine
    timm_rate = 4 * n * common["epochs"] / timm_wall
    print(f"GPU x{args.nproc}, {common['model']}, batch {common['batch']}, bf16, channels_last:")
    print(f"  engine {engine_rate:8.1f} images/s   timm train.py {timm_rate:8.1f} images/s")
    print(
        f"  engine / timm: {engine_rate / timm_rate:.2f}x (goal >= 1.0x; wall time incl. startup)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--timm-train", default=None, help="timm's train.py (GPU section)")
    parser.add_argument("--gpu-model", default="resnet50")
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--gpu-epochs", type=int, default=2)
    parser.add_argument("--gpu-per-class", type=int, default=500)
    parser.add_argument("--nproc", type=int, default=1, help="GPUs for the GPU section")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    cpu_section(args.epochs, args.per_class)
    gpu_section(args)


if __name__ == "__main__":
    main()
