"""``data stats``: what a nuclei dataset (raw PanNuke or store) contains.

Counts per fold, tissue, family and nucleus type, and the nucleus size distribution. Raw folds are
resolved chunk by chunk with the same conversion as ``prepare``, so both report the same nuclei.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.data.convert import convert_masks
from cellbench.data.families import (
    NUCLEUS_TYPES,
    TISSUES,
    family_of,
    resolve_families,
    tiles_for_family,
)
from cellbench.data.npyio import release_rows
from cellbench.data.pannuke import discover_folds, open_raw_fold
from cellbench.data.records import NucleusRecords, nucleus_records
from cellbench.data.store import is_store, open_fold, store_folds
from cellbench.errors import BadInputError

SIZE_BINS = np.array([0, 10, 25, 50, 100, 200, 400, 800, 1600, 10**9])


@dataclass
class DatasetStats:
    root: Path
    kind: str
    family: str | None = None
    folds: dict[int, dict[str, int]] = field(default_factory=dict)  # tiles, nuclei, empty
    tissues: dict[str, dict[str, int]] = field(default_factory=dict)  # tiles, nuclei
    families: dict[str, dict[str, int]] = field(default_factory=dict)
    types: dict[str, dict[str, float]] = field(default_factory=dict)  # count, area percentiles
    areas: dict[str, list[int]] = field(default_factory=dict)  # per type, histogram on SIZE_BINS

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kind": self.kind,
            "family": self.family,
            "folds": {str(k): v for k, v in self.folds.items()},
            "tissues": self.tissues,
            "families": self.families,
            "types": self.types,
            "size_bins": SIZE_BINS[:-1].tolist(),
            "size_histogram": self.areas,
        }


def _fold_records(root: Path, fold: int, kind: str, chunk: int):
    """(tissues, NucleusRecords) of one fold, chunk by chunk."""
    parts: list[NucleusRecords] = []
    if kind == "store":
        f = open_fold(root, fold)
        for start in range(0, len(f), chunk):
            stop = min(len(f), start + chunk)
            parts.append(
                nucleus_records(
                    np.asarray(f.inst[start:stop]), np.asarray(f.types[start:stop]), start
                )
            )
            release_rows(f.inst, start, stop)
            release_rows(f.types, start, stop)
        return f.tissues, NucleusRecords.concat(parts)
    raw = open_raw_fold(root, fold, strict_tissues=False)
    for start in range(0, len(raw), chunk):
        stop = min(len(raw), start + chunk)
        inst, types, _ = convert_masks(raw.masks[start:stop], raw.files.masks, start)
        parts.append(nucleus_records(inst, types, start))
        release_rows(raw.masks, start, stop)
    return raw.tissues, NucleusRecords.concat(parts)


def dataset_stats(
    root: Path,
    chunk: int = 64,
    families: Mapping[str, Sequence[str]] | None = None,
    family: str | None = None,
) -> DatasetStats:
    """Counts of a nuclei dataset; ``family`` restricts them to that family's tiles."""
    root = Path(root)
    kind = "store" if is_store(root) else "raw"
    folds = store_folds(root) if kind == "store" else discover_folds(root)
    if not folds:
        raise BadInputError(f"{root}: no nuclei folds found (raw PanNuke or cellbench store)")
    fams = resolve_families(families)
    stats = DatasetStats(root=root, kind=kind, family=family)
    tissue_tiles: Counter[str] = Counter()
    tissue_nuclei: Counter[str] = Counter()
    areas: dict[int, list[np.ndarray]] = defaultdict(list)
    for fold in folds:
        tissues, rec = _fold_records(root, fold, kind, chunk)
        if family is not None:
            keep = np.asarray(tiles_for_family(tissues, family, fams), dtype=np.int64)
            new_index = np.full(len(tissues), -1, np.int64)
            new_index[keep] = np.arange(len(keep))
            selected = new_index[rec.tile] >= 0
            rec = NucleusRecords(
                new_index[rec.tile[selected]], rec.type[selected], rec.area[selected]
            )
            tissues = [tissues[i] for i in keep]
        per_tile = np.bincount(rec.tile, minlength=len(tissues))
        stats.folds[fold] = {
            "tiles": len(tissues),
            "nuclei": int(len(rec)),
            "empty_tiles": int((per_tile == 0).sum()),
        }
        tissue_tiles.update(tissues)
        for tissue, count in zip(tissues, per_tile.tolist(), strict=True):
            tissue_nuclei[tissue] += count
        for t in range(1, len(NUCLEUS_TYPES) + 1):
            areas[t].append(rec.area[rec.type == t])
    for tissue in sorted(tissue_tiles):
        stats.tissues[tissue] = {"tiles": tissue_tiles[tissue], "nuclei": tissue_nuclei[tissue]}
        fam = family_of(tissue, fams) if tissue in TISSUES else None
        entry = stats.families.setdefault(fam or "(none)", {"tiles": 0, "nuclei": 0})
        entry["tiles"] += tissue_tiles[tissue]
        entry["nuclei"] += tissue_nuclei[tissue]
    for t, name in enumerate(NUCLEUS_TYPES, start=1):
        a = np.concatenate(areas[t]) if areas[t] else np.zeros(0)
        pct = np.percentile(a, [5, 50, 95]).tolist() if a.size else [0.0, 0.0, 0.0]
        stats.types[name] = {
            "nuclei": int(a.size),
            "area_mean": float(a.mean()) if a.size else 0.0,
            "area_p5": pct[0],
            "area_median": pct[1],
            "area_p95": pct[2],
        }
        stats.areas[name] = np.histogram(a, bins=SIZE_BINS)[0].tolist()
    return stats


def plot_stats(stats: DatasetStats, path: Path) -> Path:
    """A 2x2 PNG: tiles per tissue, nuclei per type, nuclei per family, size distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    tissues = list(stats.tissues)
    axes[0, 0].barh(tissues, [stats.tissues[t]["tiles"] for t in tissues], color="#8e6fb5")
    axes[0, 0].set_title("Tiles per tissue")
    axes[0, 0].invert_yaxis()
    types = list(stats.types)
    colors = ["#d62728", "#2ca02c", "#1f77b4", "#7f7f7f", "#ff7f0e"]
    axes[0, 1].bar(types, [stats.types[t]["nuclei"] for t in types], color=colors)
    axes[0, 1].set_title("Nuclei per type")
    fams = list(stats.families)
    axes[1, 0].bar(fams, [stats.families[f]["nuclei"] for f in fams], color="#17becf")
    axes[1, 0].set_title("Nuclei per family")
    labels = [f"<{b}" for b in SIZE_BINS[1:-1]] + [f">={SIZE_BINS[-2]}"]
    x = np.arange(len(labels))
    width = 0.16
    for i, (t, color) in enumerate(zip(types, colors, strict=True)):
        axes[1, 1].bar(x + (i - 2) * width, stats.areas[t], width, label=t, color=color)
    axes[1, 1].set_xticks(x, labels, rotation=30)
    axes[1, 1].set_title("Nucleus area (pixels)")
    axes[1, 1].legend()
    fig.suptitle(f"{stats.root} ({stats.kind})")
    fig.tight_layout()
    from cellbench.atomic import atomic_write

    try:  # atomically: an interrupted plot never leaves a torn PNG
        atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=90))
    finally:
        plt.close(fig)
    return Path(path)
