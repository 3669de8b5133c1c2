"""Nuclei metrics and post-processing throughput.

1. Metrics: cellbench's ``score_tiles`` (one contingency table per tile: bPQ, PQ of the five
   types, Dice, AJI and AJI+) against a straightforward per-pair-IoU implementation in the style
   of PanNuke-metrics' ``get_fast_pq`` and HoVer-Net's ``get_fast_aji`` (one full-image mask per
   nucleus and per overlapping pair; bPQ, five type PQs, Dice and AJI: less work than ours).
   Both run on the same generated 256x256 tiles and a perturbed copy as predictions, and must
   agree. Goal: >= 5x.
2. Post-processing: ``postprocess_tiles`` tiles/s with 1 and 2 worker processes (HoVer-Net's
   default parameters, ground-truth NP/HV/type maps as input).

    python benchmarks/bench_nuclei_metrics.py [--tiles 64] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from cellbench.data.convert import convert_masks
from cellbench.data.perturb import perturb_tiles
from cellbench.data.synth import synth_tile, tissues_for_fold
from cellbench.data.targets import hv_maps
from cellbench.metrics.nuclei import score_tiles
from cellbench.metrics.tile_pool import map_chunks
from cellbench.tasks.nuclei.postproc import PostProcParams, postprocess_tiles


def pairwise(true: np.ndarray, pred: np.ndarray):
    """Per-pair intersections and unions, one full-image mask per nucleus (the reference)."""
    true_ids = [i for i in np.unique(true) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    true_masks = {t: true == t for t in true_ids}
    pred_masks = {p: pred == p for p in pred_ids}
    inter = np.zeros((len(true_ids), len(pred_ids)))
    union = np.zeros_like(inter)
    for a, t in enumerate(true_ids):
        for p in np.unique(pred[true_masks[t]]):
            if p == 0:
                continue
            b = pred_ids.index(p)
            inter[a, b] = (true_masks[t] & pred_masks[p]).sum()
            union[a, b] = (true_masks[t] | pred_masks[p]).sum()
    return true_masks, pred_masks, inter, union


def reference_pq(true: np.ndarray, pred: np.ndarray) -> float:
    _, _, inter, union = pairwise(true, pred)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    matched = iou[iou > 0.5]
    tp, fp, fn = len(matched), iou.shape[1] - len(matched), iou.shape[0] - len(matched)
    denominator = tp + 0.5 * fp + 0.5 * fn
    return matched.sum() / denominator if denominator else float("nan")


def reference_aji(true: np.ndarray, pred: np.ndarray) -> float:
    true_masks, pred_masks, inter, union = pairwise(true, pred)
    if not true_masks:
        return float("nan")
    iou = inter / (union + 1e-6)
    best = iou.argmax(axis=1) if iou.shape[1] else np.zeros(len(true_masks), int)
    total_inter = total_union = 0.0
    used = set()
    for a, t in enumerate(true_masks):
        if iou.shape[1] and iou[a, best[a]] > 0:
            total_inter += inter[a, best[a]]
            total_union += union[a, best[a]]
            used.add(best[a])
        else:
            total_union += true_masks[t].sum()
    for b, p in enumerate(pred_masks):
        if b not in used:
            total_union += pred_masks[p].sum()
    return total_inter / total_union


def reference_tile(true, true_types, pred, pred_types):
    bpq = reference_pq(true, pred)
    per_type = [
        reference_pq(np.where(true_types == t, true, 0), np.where(pred_types == t, pred, 0))
        for t in range(1, 6)
    ]
    dice = 2 * ((true > 0) & (pred > 0)).sum() / max((true > 0).sum() + (pred > 0).sum(), 1)
    return bpq, per_type, dice, reference_aji(true, pred)


def best_of(repeats: int, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tissues = tissues_for_fold(np.random.default_rng(0), args.tiles)
    masks = np.stack(
        [synth_tile(np.random.default_rng([0, i]), t, args.size)[1] for i, t in enumerate(tissues)]
    )
    inst, types, _ = convert_masks(masks, Path("generated"))
    pred, pred_types = perturb_tiles(inst, types, seed=1)
    nuclei = int(sum(len(np.unique(t)) - 1 for t in inst))
    print(f"{args.tiles} tiles {args.size}x{args.size}, {nuclei / args.tiles:.0f} nuclei per tile")

    fast_s, fast = best_of(args.repeats, lambda: score_tiles(inst, types, pred, pred_types))
    slow_s, slow = best_of(
        args.repeats,
        lambda: [reference_tile(*z) for z in zip(inst, types, pred, pred_types, strict=True)],
    )
    for s, (bpq, _, _, aji) in zip(fast, slow, strict=True):  # the same numbers
        ours = s.pq_values()[0]
        assert np.isnan(bpq) and np.isnan(ours) or abs(ours - bpq) < 1e-9, (ours, bpq)
        assert np.isnan(aji) or abs(s.aji[0] / s.aji[1] - aji) < 1e-9
    print(f"{'metrics: cellbench (contingency table)':44s} {args.tiles / fast_s:8.1f} tiles/s")
    print(f"{'metrics: per-pair IoU reference':44s} {args.tiles / slow_s:8.1f} tiles/s")
    print(f"metrics speed-up: {slow_s / fast_s:.1f}x (goal >= 5x); results identical")

    np_prob = (inst > 0).astype(np.float32)
    hv = hv_maps(inst)
    nt = np.eye(6, dtype=np.float32)[types].transpose(0, 3, 1, 2)
    params = PostProcParams()
    timings = {}
    for workers in (1, 2):
        seconds, _ = best_of(
            args.repeats,
            lambda w=workers: postprocess_tiles(np_prob, hv, nt, params, workers=w, chunk=8),
        )
        timings[workers] = seconds
        label = f"post-processing, {workers} worker{'s' if workers > 1 else ''}"
        print(f"{label:44s} {args.tiles / seconds:8.1f} tiles/s")
    start_s, _ = best_of(args.repeats, lambda: list(map_chunks(abs, range(2), workers=2)))
    print(f"post-processing 2 workers vs 1: {timings[1] / timings[2]:.2f}x (includes starting the")
    load = os.getloadavg()[0]
    print(f"  pool, {start_s:.2f} s here; CPUs: {os.cpu_count()}, load average {load:.1f})")


if __name__ == "__main__":
    main()
