"""Startup time of the CLI: `cellbench --help` (and each top-level command's --help) against a bare
`python -c pass`, measured in the same run. Goal: `cellbench --help` under 0.5 s.

    python benchmarks/bench_cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

GOAL_S = 0.5


def wall(argv: list[str], repeat: int) -> float:
    """Median wall time of running argv, after one warm-up run (disk cache)."""
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from typer.main import get_command

    from cellbench.cli.app import app

    commands = sorted(get_command(app).commands)
    reference = wall([sys.executable, "-c", "pass"], args.repeat)
    cli = [sys.executable, "-m", "cellbench"]
    print(f"{'command':<32}{'median s':>10}{'vs python -c pass':>20}")
    print(f"{'python -c pass':<32}{reference:>10.3f}{1.0:>19.2f}x")
    main_help = wall([*cli, "--help"], args.repeat)
    print(f"{'cellbench --help':<32}{main_help:>10.3f}{main_help / reference:>19.2f}x")
    for name in commands:
        t = wall([*cli, name, "--help"], args.repeat)
        print(f"{'cellbench ' + name + ' --help':<32}{t:>10.3f}{t / reference:>19.2f}x")
    verdict = "ok" if main_help < GOAL_S else "OVER GOAL"
    print(f"goal: cellbench --help < {GOAL_S} s -> {main_help:.3f} s ({verdict})")


if __name__ == "__main__":
    main()
