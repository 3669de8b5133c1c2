"""Sweep throughput: 4 small CPU trials on a 2-worker local pool against the same 4 trials one
after another (1 worker), and the Ray backend against the local pool on the same trials, all
measured in one run. Goal: pool speed-up >= 1.6 on 2 cores. The machine's load average is
printed: other processes on the cores distort the ratios, so the configurations alternate and
each keeps its fastest of ``--repeat`` rounds.

    python benchmarks/bench_sweep.py [--epochs 3] [--repeat 2] [--no-ray]
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
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="Rounds; the fastest counts.")
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray comparison.")
    args = parser.parse_args()

    from cellbench.data.classify.shapes import write_shapes_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "shapes"
        write_shapes_dataset(data, n_per_class=60, image_size=32, seed=0)
        print(f"cores {os.cpu_count()} · load average {os.getloadavg()[0]:.2f} before")
        with_ray = not args.no_ray
        if with_ray:
            try:
                import ray.tune  # noqa: F401
            except ImportError:
                print("ray: not installed (pip install 'cellbench[ray]'), comparison skipped")
                with_ray = False
        times: dict[str, list[float]] = {"seq": [], "pool": [], "ray": []}
        for round_ in range(args.repeat):  # alternate, so a burst of load hits all alike
            times["seq"].append(sweep(root, data, f"seq{round_}", 1, args.epochs, "local"))
            times["pool"].append(sweep(root, data, f"pool{round_}", 2, args.epochs, "local"))
            if with_ray:
                times["ray"].append(sweep(root, data, f"ray{round_}", 2, args.epochs, "ray"))
        sequential, pool = min(times["seq"]), min(times["pool"])
        speedup = sequential / pool
        verdict = "ok" if speedup >= GOAL else "below goal"
        print(f"4 trials, 1 worker (sequential): {sequential:6.1f} s  (rounds {times['seq']})")
        print(f"4 trials, 2 workers (local pool): {pool:6.1f} s  (rounds {times['pool']})")
        print(f"speed-up {speedup:.2f}x (goal >= {GOAL}) {verdict}")
        if with_ray:
            on_ray = min(times["ray"])
            print(f"4 trials, 2 at a time on local Ray: {on_ray:6.1f} s  (rounds {times['ray']})")
            print(f"Ray overhead vs the local pool: {on_ray / pool:.2f}x, +{on_ray - pool:.1f} s")
        print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
