"""Peak RSS of ``data prepare`` on a 2,000-tile generated fold, vs the fold's size on disk.

A raw fold of N 256x256 tiles weighs 4.5 MB per tile (float64 images and masks): 2,000 tiles are
9.4 GB, like a real PanNuke fold. To keep generation short, 64 distinct generated tiles are
repeated to fill the fold (content does not change memory behaviour). ``prepare`` then runs in a
fresh subprocess whose peak RSS (VmHWM from /proc; ``resource.getrusage`` elsewhere) is
reported next to the peak RSS of a
subprocess that only imports the same modules (the interpreter's floor).

    python benchmarks/bench_prepare.py [--tiles 2000] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cellbench.data.synth import synth_tile, tissues_for_fold, write_raw_fold

CHILD = """
import json, resource, sys, time
from pathlib import Path
from cellbench.data.prepare import prepare
t0 = time.perf_counter()
if sys.argv[1] == "prepare":
    prepare(Path(sys.argv[2]), Path(sys.argv[3]), folds=[1], chunk=int(sys.argv[4]))
# VmHWM is this process image's peak RSS; ru_maxrss would include the parent's at fork time.
status = Path("/proc/self/status")
hwm = [int(l.split()[1]) for l in status.read_text().splitlines() if l.startswith("VmHWM")] \
    if status.exists() else [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
print(json.dumps({"maxrss_kb": hwm[0], "seconds": time.perf_counter() - t0}))
"""


def _make_fold(root: Path, tiles: int, size: int, distinct: int) -> int:
    """A flat raw fold of ``tiles`` tiles, written by synth's own writer from a pool of
    ``distinct`` generated tiles (repeated), so it takes seconds rather than minutes."""
    tissues = tissues_for_fold(np.random.default_rng(0), tiles)
    pool = [synth_tile(np.random.default_rng([0, i]), tissues[i], size) for i in range(distinct)]
    write_raw_fold(root, 1, tissues, size, "flat", lambda i: pool[i % distinct])
    return sum(p.stat().st_size for p in (root / "fold1").iterdir())


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        raw_bytes = _make_fold(work / "raw", args.tiles, args.size, distinct=64)
        print(
            f"generated fold: {args.tiles} tiles, {raw_bytes / 2**30:.2f} GiB on disk "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        floor = _child("imports")
        run = _child("prepare", str(work / "raw"), str(work / "store"), str(args.chunk))
        store_bytes = sum(p.stat().st_size for p in (work / "store" / "fold1").iterdir())
        peak = run["maxrss_kb"] * 1024
        print(
            f"prepare: {run['seconds']:.1f} s, {args.tiles / run['seconds']:.0f} tiles/s, "
            f"store {store_bytes / 2**30:.2f} GiB"
        )
        print(
            f"peak RSS: {peak / 2**20:.0f} MiB (imports alone: "
            f"{floor['maxrss_kb'] / 2**10:.0f} MiB)"
        )
        print(
            f"peak RSS / raw fold on disk: {peak / raw_bytes:.3f} "
            f"({raw_bytes / peak:.0f}x smaller than the fold)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
