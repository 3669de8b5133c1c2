"""Sweep throughput: 4 small CPU trials on a 2-worker local pool against the same 4 trials one
after another (1 worker), and the Ray backend against the local pool on the same trials, all
measured in one run. Goal: pool speed-up >= 1.6 on 2 cores. The machine's load average is
printed: other processes on the cores lower the speed-up.

    python benchmarks/bench_sweep.py [--epochs 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.6
TINY = [
    "data.image_size=32",
    "model.args.channels=[16,32]",
    "model.args.hidden=32",
    "train.batch_size=16",
    "train.warmup_epochs=0",
]


def sweep(root: Path, data: Path, name: str, workers: int, epochs: int, backend: str) -> float:
    argv = [sys.executable, "-m", "cellbench", "sweep", "--profile", "demo"]
    for text in [*TINY, f"data.path={data}"]:
        argv += ["--set", text]
    argv += ["--grid", "train.lr=1e-3,3e-3", "--grid", "train.batch_size=16,32"]
    argv += ["--epochs", str(epochs), "--workers", str(workers), "--name", name]
    argv += ["--backend", backend, "--runs-dir", str(root / name / "runs")]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray comparison.")
    args = parser.parse_args()

    from cellbench.data.classify.shapes import write_shapes_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "shapes"
        write_shapes_dataset(data, n_per_class=60, image_size=32, seed=0)
        print(f"cores {os.cpu_count()} · load average {os.getloadavg()[0]:.2f} before")
        sequential = sweep(root, data, "seq", 1, args.epochs, "local")
        pool = sweep(root, data, "pool", 2, args.epochs, "local")
        speedup = sequential / pool
        verdict = "ok" if speedup >= GOAL else "below goal"
        print(f"4 trials, 1 worker (sequential): {sequential:6.1f} s")
        print(f"4 trials, 2 workers (local pool): {pool:6.1f} s")
        print(f"speed-up {speedup:.2f}x (goal >= {GOAL}) {verdict}")
        if not args.no_ray:
            try:
                import ray.tune  # noqa: F401
            except ImportError:
                print("ray: not installed (pip install 'cellbench[ray]'), comparison skipped")
            else:
                on_ray = sweep(root, data, "ray", 2, args.epochs, "ray")
                print(f"4 trials, 2 at a time on local Ray: {on_ray:6.1f} s")
                print(
                    f"Ray overhead vs the local pool: {on_ray / pool:.2f}x, +{on_ray - pool:.1f} s"
                )
        print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
