"""``features extract``: peak RSS on a fold vs one ten times larger, tiles/s vs a bare
``forward_features`` loop on two backbones, and a SIGKILL + resume against an uninterrupted run.

Memory: the extraction runs in a fresh subprocess on a generated fold of N tiles, then on one of
10 N tiles; each reports its peak RSS (VmHWM). Memory is bounded by the batches in flight, not the
fold, so the ratio should stay near 1 (goal <= 1.2).

Speed: in this process, on the same fold and the same batches, ``extract_features`` (the reader
thread, the forward with block hooks, the float16 cast and row checks, the background writer and
its commits, the manifests, the CLS statistics) against a bare loop that reads each batch from
the memory-mapped fold, preprocesses it the same way and calls ``forward_features``, keeping
nothing (goal >= 0.95x). Two backbones: vit-demo (the quickstart's; small, so the pipeline's own
costs show most) and a ViT-B/14-sized one (768 wide, 12 blocks, 14-px patches at 224 px, random
weights; blocks 3, 6, 9, 12 stored), interleaved runs, best of ``--repeats``.

Resume: an extraction in a subprocess committing every few tiles is killed (SIGKILL) halfway,
run again, and its files compared byte for byte with an uninterrupted extraction.

The folds hold random uint8 tiles in a valid store (content changes neither memory nor speed).

    python benchmarks/bench_features.py [--tiles 200] [--speed-tiles 1000] [--vitb-tiles 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from cellbench import __version__
from cellbench.atomic import atomic_write_json
from cellbench.data.families import TISSUES
from cellbench.data.store import STORE_FORMAT, create_arrays, write_root_manifest

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
from cellbench.features.extract import extract_features
from cellbench.models.backbones import build_backbone
torch.set_num_threads(int(sys.argv[4]))
t0 = time.perf_counter()
backbone = build_backbone(sys.argv[2], device="cpu")
extract_features(Path(sys.argv[1]), backbone, [1], "bench", batch_size=int(sys.argv[3]))
status = Path("/proc/self/status")
hwm = [int(l.split()[1]) for l in status.read_text().splitlines() if l.startswith("VmHWM")] \\
    if status.exists() else [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
print(json.dumps({"maxrss_kb": hwm[0], "seconds": time.perf_counter() - t0}))
"""


def make_store(root: Path, tiles: int, size: int = 256) -> Path:
    """A valid one-fold store of random tiles, written chunk by chunk."""
    folder = root / "fold1"
    folder.mkdir(parents=True)
    arrays = create_arrays(folder, tiles, size, size)
    rng = np.random.default_rng(0)
    for start in range(0, tiles, 100):
        stop = min(tiles, start + 100)
        arrays["images"][start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), np.uint8)
    for arr in arrays.values():
        arr.flush()
    del arrays
    atomic_write_json(folder / "tissues.json", [TISSUES[i % len(TISSUES)] for i in range(tiles)])
    atomic_write_json(
        folder / "manifest.json",
        {"format": STORE_FORMAT, "fold": 1, "tiles": tiles, "height": size, "width": size},
    )
    write_root_manifest(root, __version__)
    return root


def child_peak(store: Path, backbone: str, batch_size: int, threads: int) -> dict:
    args = [str(store), backbone, str(batch_size), str(threads)]
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


VITB14 = {
    "model": "vit_base_patch14_dinov2",
    "seed": 0,
    "kwargs": {"img_size": 224, "num_classes": 0},
    "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                      "input_size": 224},
    "blocks": [3, 6, 9, 12],
}  # fmt: skip


def speed(store: Path, backbone_name: str, batch_size: int, repeats: int) -> tuple[float, float]:
    """Best tiles/s of the extraction and of the bare loop, interleaved runs."""
    import torch

    from cellbench.data.store import open_fold
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    backbone = build_backbone(backbone_name, device="auto")
    images = open_fold(store, 1).images  # memory-mapped, as a plain script would read the fold
    n = len(images)
    best_extract = best_plain = 0.0

    def extraction() -> float:
        # the previous repeat's store is removed first, untimed: deleting is not extracting
        shutil.rmtree(store / "features", ignore_errors=True)
        t0 = time.perf_counter()
        extract_features(store, backbone, [1], "speed", batch_size=batch_size)
        return n / (time.perf_counter() - t0)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(0, n, batch_size):
                x = backbone.preprocess(np.array(images[b : b + batch_size]))
                backbone.model.forward_features(x).float().cpu()
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    for k in range(repeats):
        # alternate which goes first: a shared machine's slow spells fall on both alike
        if k % 2 == 0:
            best_extract = max(best_extract, extraction())
            best_plain = max(best_plain, bare())
        else:
            best_plain = max(best_plain, bare())
            best_extract = max(best_extract, extraction())
    return best_extract, best_plain


KILLED = """
import sys
from pathlib import Path
import torch
from cellbench.features.extract import extract_features
from cellbench.models.backbones import build_backbone
torch.set_num_threads(1)
extract_features(Path(sys.argv[1]), build_backbone(sys.argv[2], device="cpu"), [1], sys.argv[3],
                 batch_size=2, chunk_size=2)
"""


def kill_and_resume(store: Path, backbone: str) -> tuple[int, bool]:
    """SIGKILL an extraction once it committed some tiles, resume it, compare with a whole one.
    Returns (tiles committed when killed, byte-identical)."""
    import torch

    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    manifest = store / "features" / "killed" / "fold1" / "manifest.json"
    n = json.loads((store / "fold1" / "manifest.json").read_text())["tiles"]
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(store), backbone, "killed"])
    done = 0
    try:
        while proc.poll() is None and done < n // 2:
            try:
                done = json.loads(manifest.read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child, so both runs compute alike
    try:
        made = build_backbone(backbone, device="cpu")
        extract_features(store, made, [1], "killed", batch_size=2, chunk_size=2)
        extract_features(store, made, [1], "whole", batch_size=2, chunk_size=2)
    finally:
        torch.set_num_threads(threads)
    same = all(
        (store / "features" / "killed" / "fold1" / name).read_bytes()
        == (store / "features" / "whole" / "fold1" / name).read_bytes()
        for name in ("cls.npy", "tokens.npy", "tissues.json")
    )
    return done, same


def report_speed(name: str, store: Path, backbone: str, batch: int, repeats: int) -> float:
    extract_rate, plain_rate = speed(store, backbone, batch, repeats)
    ratio = extract_rate / plain_rate
    tiles = json.loads((store / "fold1" / "manifest.json").read_text())["tiles"]
    print(
        f"speed ({name}, batch {batch}, {tiles} tiles): extraction {extract_rate:.1f} tiles/s, "
        f"bare forward_features loop {plain_rate:.1f} tiles/s: {ratio:.2f}x (goal >= 0.95) "
        f"{'OK' if ratio >= 0.95 else 'MISSED'}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=200, help="small fold (the large is 10x)")
    parser.add_argument("--backbone", default="vit-demo")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the children")
    parser.add_argument("--speed-tiles", type=int, default=1000, help="fold for vit-demo's speed")
    parser.add_argument("--vitb-tiles", type=int, default=32, help="fold for ViT-B/14's speed")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_features_", dir=args.workdir))
    try:
        small = make_store(work / "small", args.tiles)
        large = make_store(work / "large", args.tiles * 10)
        a = child_peak(small, args.backbone, args.batch_size, args.threads)
        b = child_peak(large, args.backbone, args.batch_size, args.threads)
        ratio = b["maxrss_kb"] / a["maxrss_kb"]
        print(
            f"peak RSS: {args.tiles} tiles {a['maxrss_kb'] / 1024:.0f} MB "
            f"({a['seconds']:.1f} s), {args.tiles * 10} tiles {b['maxrss_kb'] / 1024:.0f} MB "
            f"({b['seconds']:.1f} s): ratio {ratio:.2f} (goal <= 1.2) "
            f"{'OK' if ratio <= 1.2 else 'MISSED'}"
        )
        shutil.rmtree(large)
        # folds of realistic length: the per-fold costs (manifests, lock, CLS statistics) are
        # paid once per fold, as on a real PanNuke fold of ~2,600 tiles
        fold = make_store(work / "speed", args.speed_tiles)
        report_speed(args.backbone, fold, args.backbone, args.batch_size, args.repeats)
        shutil.rmtree(fold)
        vitb = work / "vit-b14.yaml"
        vitb.write_text(yaml.safe_dump(VITB14))
        fold = make_store(work / "vitb", args.vitb_tiles)
        report_speed("ViT-B/14 random", fold, str(vitb), args.batch_size, args.repeats)
        shutil.rmtree(fold)
        fold = make_store(work / "kill", 64)
        done, same = kill_and_resume(fold, args.backbone)
        print(
            f"SIGKILL after {done}/64 tiles committed, then resumed: store "
            f"{'byte-identical to an uninterrupted run OK' if same else 'DIFFERS: MISSED'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
