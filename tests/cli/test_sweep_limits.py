"""Issue 15, point 5: refuse early, not per trial. A space of 10⁶ combinations is refused with
its count (exit 2) without being expanded — nothing written, little memory; a grid value no
trial could use (an organ family typo) is refused before the first trial."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from cellbench.cli.app import app

runner = CliRunner()
TEN = ",".join(str(v) for v in range(1, 11))
HUGE = [
    f"train.lr={','.join(f'0.{v}' for v in range(1, 10))},1.0",
    f"train.batch_size={TEN}",
    f"train.epochs={TEN}",
    f"train.seed={TEN}",
    f"train.weight_decay={','.join(f'0.{v}' for v in range(1, 10))},1.0",
    f"data.image_size={','.join(str(v) for v in range(32, 42))}",
]


# the CLI in a child that reports its own peak RSS on the way out (the speed goal, < 1 s, is
# measured by benchmarks/bench_sweep_limits.py, not here)
MEASURED = """
import runpy, sys
sys.argv = ["cellbench", *sys.argv[1:]]
try:
    runpy.run_module("cellbench", run_name="__main__")
finally:  # VmHWM: this process's peak (ru_maxrss would count the forking parent's, on Linux)
    peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print("peak_kb=" + peak, file=sys.stderr)
"""


def test_a_million_trials_are_refused_with_their_count_unexpanded(tmp_path):
    grids = [a for g in HUGE for a in ("--grid", g)]
    args = ["sweep", "--profile", "demo", *grids, "--runs-dir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "1,000,000 trials" in done.stderr and "--max-trials 1,000" in done.stderr
    # the CLI's own peak (expanding the space took 5 GB; counting it takes an interpreter)
    peak_mb = int(done.stderr.rsplit("peak_kb=", 1)[1]) / 1024
    assert peak_mb < 200, peak_mb
    assert not any(tmp_path.iterdir())  # no sweep folder, no trials.json, no run


def test_max_trials_raises_the_limit_and_a_huge_range_is_counted_first(tmp_path):
    small = ["sweep", "--profile", "demo", "--grid", "train.lr=0.1,0.2,0.3", "--grid"]
    result = runner.invoke(
        app, [*small, "train.seed=1,2", "--max-trials", "5", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "6 trials" in result.stderr
    study = tmp_path / "huge.yaml"
    study.write_text("profile: demo\nspace:\n  train.lr: {range: [0.0, 1.0, 1.0e-9]}\n")
    result = runner.invoke(app, ["sweep", str(study), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 3 and "space.train.lr gives 1,000,000,00" in result.stderr


def test_a_family_typo_in_the_grid_is_refused_before_any_trial(tmp_path):
    result = runner.invoke(
        app,
        ["sweep", "--profile", "nuclei-demo", "--grid", "data.family=digestive,urologicc"]
        + ["--runs-dir", str(tmp_path / "runs")],
    )
    assert result.exit_code == 2, result.output
    assert "data.family=urologicc" in result.stderr and "did you mean 'urologic'" in result.stderr
    assert not any(tmp_path.iterdir())
