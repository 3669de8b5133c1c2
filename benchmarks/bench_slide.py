"""Slide prediction: pipeline tiles/s against the forward pass alone, and peak RSS on a slide
and on one four times its area, in one run.

Speed: in this process, ``write_slide`` (reader threads -> batched forward -> post-processing
processes -> journal -> outputs) on a generated slide, against a loop that only calls the
model's ``forward_tiles`` on the same tiles, read into memory beforehand, in the same batches
(goal >= 0.9x where post-processing has workers to keep up). The summary's per-stage busy times
say which stage bounds the pipeline.

Memory: ``write_slide`` in a fresh subprocess on the slide, then on one with twice its width and
height; each reports its peak RSS (VmHWM) and its post-processing workers' (RUSAGE_CHILDREN).
Memory is bounded by the tiles in flight, not by the slide: the ratio should stay near 1 (goal
<= 1.2).

Organ head (``--organ-run``, or with the tiny run a tiny organ head trained on its features): the
forward pass with the per-tile head (the same backbone pass also gives the CLS the head reads)
against the forward pass alone, alternating on the same tiles; its overhead should be the head's
few matrix products, not a second backbone pass.

The slides are mosaics of generated tiles (``data synth``) written as pyramidal tiled TIFFs. The
model is ``--run`` (a trained nuclei run), or the tests' tiny nuclei run trained here (64-px tiles,
a few minutes on a CPU).

    python benchmarks/bench_slide.py [--run RUN [--organ-run RUN]] [--side 8] [--device auto]
                                     [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys
from pathlib import Path
import cellbench
from cellbench.inference.slide import write_slide
if __name__ == "__main__":
    model = cellbench.load_model(sys.argv[1], device=sys.argv[4])
    r = write_slide(model, sys.argv[2], sys.argv[3], workers=int(sys.argv[5]),
                    batch_size=int(sys.argv[6]), tissue="none", force=True)
    hwm = [int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines()
           if l.startswith("VmHWM")][0]
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"maxrss_kb": hwm, "workers_maxrss_kb": kids,
                      "tiles": r.summary["tiles"]["with_tissue"], "objects": r.summary["objects"]}))
"""


def _slide(store: Path, path: Path, side: int, mpp: float) -> Path:
    from tests.helpers_slides import mosaic, write_pyramid

    return write_pyramid(path, mosaic(store, side, side), mpp, levels=4)


def _store_of(run_root: Path) -> Path:
    """The canonical store the run's feature store was extracted from."""
    import yaml

    from cellbench.features.store import read_manifest

    config = yaml.safe_load((run_root / "config.yaml").read_text())
    manifest = read_manifest(Path(config["data"]["features"]) / "manifest.json") or {}
    return Path((manifest.get("source") or {}).get("store") or manifest["source_store"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained nuclei run (default: train the tests' tiny one)")
    parser.add_argument(
        "--organ-run",
        help="an organ run on --run's backbone (default: none "
        "with --run; a tiny one trained on the tiny run's features otherwise)",
    )
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--side", type=int, default=8, help="slide side in generated tiles")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import cellbench
    from cellbench.cli.predict_slide import default_workers
    from cellbench.inference.slide import plan_slide, write_slide
    from cellbench.inference.tile_head import load_tile_head
    from cellbench.inference.tiling import read_tile
    from cellbench.runs.store import RunStore

    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory(prefix="bench-slide-") as tmp:
        tmp = Path(tmp)
        organ_root = None
        if args.run:
            run_root = RunStore(args.runs_dir).resolve(args.run).root
            if args.organ_run:
                organ_root = RunStore(args.runs_dir).resolve(args.organ_run).root
        else:
            from cellbench.engine.session import TrainRequest, train
            from tests.helpers_nuclei_run import make_nuclei_run

            print("training the tests' tiny nuclei run ...", file=sys.stderr)
            tiny = make_nuclei_run(tmp / "run", 12, 12, "train.scheduler=none")
            run_root = tiny.run.root
            sets = ["task=organ", f"data.features={tiny.features}", "organ.target=family"]
            request = TrainRequest(overrides=sets, run="organ", runs_dir=tiny.runs)
            organ_root = train(request)[0].root
        model = cellbench.load_model(run_root, device=args.device)
        head = load_tile_head(organ_root, device=model.device) if organ_root else None
        store = _store_of(run_root)
        small = _slide(store, tmp / "small.tif", args.side, model.mpp)
        large = _slide(store, tmp / "large.tif", 2 * args.side, model.mpp)

        # --- speed: the pipeline, then the forward pass alone on the same tiles
        result = write_slide(
            model,
            small,
            tmp / "out",
            workers=workers,
            batch_size=args.batch_size,
            tissue="none",
            force=True,
        )
        timings = result.summary["timings"]
        plan = plan_slide(model, small, tissue="none")
        tiles = np.stack([read_tile(plan.reader, plan.geometry, t) for t in plan.tiles])
        plan.reader.close()
        model.forward_tiles(tiles[: args.batch_size])  # warm-up, as the pipeline had its own
        start = time.perf_counter()
        for k in range(0, len(tiles), args.batch_size):
            model.forward_tiles(tiles[k : k + args.batch_size])
        forward_rate = len(tiles) / (time.perf_counter() - start)
        pipeline_rate = timings["items_per_s"]

        # --- the per-tile organ head: forward with and without it, alternating, same tiles
        organ = {}
        if head is not None:
            seconds = {"alone": 0.0, "with_head": 0.0}
            for _ in range(3):
                for k in range(0, len(tiles), args.batch_size):
                    batch = tiles[k : k + args.batch_size]
                    start = time.perf_counter()
                    model.forward_tiles(batch)
                    seconds["alone"] += time.perf_counter() - start
                    start = time.perf_counter()
                    _, cls = model.forward_tiles_and_cls(batch)
                    head.probabilities(cls)
                    seconds["with_head"] += time.perf_counter() - start
            organ = {
                "organ_run": head.run_name,
                "forward_alone_s": round(seconds["alone"], 3),
                "forward_with_head_s": round(seconds["with_head"], 3),
                "head_overhead": round(seconds["with_head"] / seconds["alone"] - 1, 4),
            }

        # --- memory: fresh processes, the slide and one four times its area
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        rss = {}
        for name, path in (("slide", small), ("slide_4x_area", large)):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(run_root), str(path), str(tmp / name)]
                + [args.device, str(workers), str(args.batch_size)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rss[name] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = rss["slide_4x_area"]["maxrss_kb"] / rss["slide"]["maxrss_kb"]

    capacity = {
        stage: len(tiles) / busy
        for stage, busy in timings["busy_per_worker"].items()
        if stage != "forward" and busy > 0
    }
    bound = min([forward_rate, *capacity.values()])
    report = {
        "device": str(model.device),
        "tile": model.tile_size,
        "tiles": len(tiles),
        "batch_size": args.batch_size,
        "workers": workers,
        "pipeline_tiles_per_s": pipeline_rate,
        "forward_only_tiles_per_s": round(forward_rate, 3),
        "ratio": round(pipeline_rate / forward_rate, 3),
        "goal_ratio": 0.9,
        "busy_per_worker_s": timings["busy_per_worker"],
        "bottleneck": timings["bottleneck"],
        # what this machine allows: the slowest of the forward alone and each other stage's
        # capacity (tiles / its busy seconds per thread or process). Where post-processing
        # has too few workers (2 cores) the bound is theirs, not the forward's
        "bound_tiles_per_s": round(bound, 3),
        "ratio_to_bound": round(pipeline_rate / bound, 3),
        "peak_rss_mb": {k: round(v["maxrss_kb"] / 1024, 1) for k, v in rss.items()},
        "workers_peak_rss_mb": {k: round(v["workers_maxrss_kb"] / 1024, 1) for k, v in rss.items()},
        "tiles_per_slide": {k: v["tiles"] for k, v in rss.items()},
        "rss_ratio_4x_area": round(ratio, 3),
        "goal_rss_ratio": 1.2,
        **organ,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
