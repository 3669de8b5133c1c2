"""Refusing a huge sweep: a space of 10⁶ combinations (six keys of ten values) refused with its
count, against ``cellbench --help`` (the interpreter and CLI start-up alone), in one run.
Goals (issue 15): the refusal costs < 1 s over start-up and peaks < 200 MB RSS.

    python benchmarks/bench_sweep_limits.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

TEN = ",".join(str(v) for v in range(1, 11))
GRIDS = [
    "train.lr=" + ",".join(f"0.{v}" for v in range(1, 10)) + ",1.0",
    f"train.batch_size={TEN}",
    f"train.epochs={TEN}",
    f"train.seed={TEN}",
    "train.weight_decay=" + ",".join(f"0.{v}" for v in range(1, 10)) + ",1.0",
    "data.image_size=" + ",".join(str(v) for v in range(32, 42)),
]
# the CLI in a child that prints its own peak RSS (VmHWM) on the way out
MEASURED = """
import runpy, sys
sys.argv = ["cellbench", *sys.argv[1:]]
try:
    runpy.run_module("cellbench", run_name="__main__")
finally:
    peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print("peak_kb=" + peak, file=sys.stderr)
"""


def measure(args: list[str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_mb = int(done.stderr.rsplit("peak_kb=", 1)[1]) / 1024
    return seconds, peak_mb, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; the fastest counts.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = ["sweep", "--profile", "demo", *[a for g in GRIDS for a in ("--grid", g)]]
        sweep += ["--runs-dir", f"{tmp}/runs"]
        help_runs = [measure(["--help"]) for _ in range(args.repeat)]
        sweep_runs = [measure(sweep) for _ in range(args.repeat)]
    base = min(r[0] for r in help_runs)
    refused = min(r[0] for r in sweep_runs)
    peak = max(r[1] for r in sweep_runs)
    assert all(r[2] == 2 for r in sweep_runs), "the sweep was not refused (exit 2)"
    print(f"cellbench --help        {base:.2f} s")
    print(f"10^6-trial sweep refused {refused:.2f} s  (+{refused - base:.2f} s, goal < 1 s)")
    print(f"peak RSS                {peak:.0f} MB  (goal < 200 MB)")


if __name__ == "__main__":
    main()
