"""HV-target throughput: cellbench's vectorized hv_maps vs a naive per-nucleus implementation.

Both run in this process on the same 256 generated 256x256 tiles (resolved to store instance
maps exactly as ``data prepare`` does). Each is timed as the best of ``--repeats`` runs. Prints
tiles/s for each and the speed-up ratio, and checks that both give the same maps.

    python benchmarks/bench_hv.py [--tiles 256] [--size 256] [--chunk 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cellbench.data.convert import convert_masks
from cellbench.data.synth import synth_tile, tissues_for_fold
from cellbench.data.targets import hv_map_reference, hv_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tissues = tissues_for_fold(np.random.default_rng(0), args.tiles)
    masks = np.stack(
        [synth_tile(np.random.default_rng([0, i]), t, args.size)[1] for i, t in enumerate(tissues)]
    )
    inst, _, _ = convert_masks(masks, Path("generated"))
    nuclei = int(inst.reshape(len(inst), -1).max(1).sum())
    print(
        f"{args.tiles} tiles {args.size}x{args.size}, {nuclei} nuclei "
        f"({nuclei / args.tiles:.0f} per tile)"
    )

    def vectorized() -> np.ndarray:
        return np.concatenate(
            [hv_maps(inst[s : s + args.chunk]) for s in range(0, len(inst), args.chunk)]
        )

    def naive() -> np.ndarray:
        return np.stack([hv_map_reference(t) for t in inst])

    timings = {}
    results = {}
    for name, fn in (
        ("vectorized (bincount + ufunc.at)", vectorized),
        ("naive (per-nucleus full-image)", naive),
    ):
        best = float("inf")
        for _ in range(args.repeats):  # best of the same number of runs for both
            t0 = time.perf_counter()
            results[name] = fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
        print(f"{name:40s} {args.tiles / best:9.1f} tiles/s  ({best:.3f} s)")
    (fast, slow) = timings.values()
    a, b = results.values()
    diff = float(np.abs(a - b).max())
    print(f"speed-up: {slow / fast:.1f}x   max |difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
