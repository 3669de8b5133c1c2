"""Per-tile detections (what a slide's post-processing workers and ``predict`` run on each tile:
watershed post-processing, types, outlines as QuPath polygons): the batched outline
simplification against scikit-image's ``approximate_polygon`` called ring by ring, in one run.

The tiles are generated 256x256 tiles (``data synth``); their maps are what a good decoder gives:
a blurred nucleus mask with noise for NP, the exact HV targets with noise, blurred one-hot types.
Both variants run in this process on the same maps, best of ``--repeats``; the detections must
be identical (same outlines, point for point). Then as a slide tile (``predict`` on a slide):
only the nuclei centred in the tile's core are outlined.

    python benchmarks/bench_detections.py [--tiles 64] [--size 256] [--repeats 3] [--margin 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon

from cellbench.data.convert import convert_masks
from cellbench.data.synth import synth_tile, tissues_for_fold
from cellbench.data.targets import hv_maps
from cellbench.tasks.nuclei.export import geojson
from cellbench.tasks.nuclei.export.detections import maps_detections
from cellbench.tasks.nuclei.postproc import PostProcParams


def decoder_like_maps(tiles: int, size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    tissues = tissues_for_fold(np.random.default_rng(0), tiles)
    masks = np.stack(
        [synth_tile(np.random.default_rng([0, i]), t, size)[1] for i, t in enumerate(tissues)]
    )
    inst, types, _ = convert_masks(masks, Path("generated"))
    hv = hv_maps(inst)
    rng = np.random.default_rng(1)
    out = []
    for k in range(tiles):
        noise = rng.normal(0, 0.05, (size, size)).astype(np.float32)
        blurred = ndimage.gaussian_filter((inst[k] > 0).astype(np.float32), 1)
        np_prob = np.clip(blurred + noise, 0, 1)
        one_hot = np.eye(6, dtype=np.float32)[types[k]].transpose(2, 0, 1)
        nt = ndimage.gaussian_filter(one_hot, (0, 1, 1))
        out.append((np_prob, (hv[k] + noise[None]).astype(np.float32), nt))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--margin", type=int, default=32, help="a slide tile's margin, pixels")
    args = parser.parse_args()

    maps = decoder_like_maps(args.tiles, args.size)
    params = PostProcParams()
    batched = geojson.approximate_polygons

    def ring_by_ring(chains, tolerance):
        return [approximate_polygon(chain, tolerance) for chain in chains]

    timings, results = {}, {}
    for name, simplify in (("batched", batched), ("ring by ring (scikit-image)", ring_by_ring)):
        geojson.approximate_polygons = simplify
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            results[name] = [maps_detections(m, params=params) for m in maps]
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    geojson.approximate_polygons = batched
    nuclei = sum(len(d) for d in results["batched"])
    print(f"{args.tiles} tiles {args.size}x{args.size}, {nuclei} nuclei detected")
    for name, best in timings.items():
        per_tile = 1000 * best / args.tiles
        print(f"{name:30s} {args.tiles / best:7.1f} tiles/s  ({per_tile:.1f} ms a tile)")
    same = results["batched"] == results["ring by ring (scikit-image)"]
    ratio = timings["ring by ring (scikit-image)"] / timings["batched"]
    print(f"speed-up: {ratio:.2f}x   detections identical: {'yes' if same else 'NO'}")

    # as a slide tile: only the nuclei centred in the core are outlined (the margin's are the
    # neighbouring tiles'); the same detections as outlining all and keeping the core's
    m = args.margin
    core = (m, m, args.size - m, args.size - m)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        own = [maps_detections(maps_k, core, params=params) for maps_k in maps]
        best = min(best, time.perf_counter() - t0)
    kept = [
        [d for d in tile if core[0] <= d["x"] < core[2] and core[1] <= d["y"] < core[3]]
        for tile in results["batched"]
    ]
    print(
        f"slide tile, margin {m} (core only): {args.tiles / best:7.1f} tiles/s "
        f"({1000 * best / args.tiles:.1f} ms a tile), {timings['batched'] / best:.2f}x the whole "
        f"tile; the core's detections identical: {'yes' if own == kept else 'NO'}"
    )


if __name__ == "__main__":
    main()
