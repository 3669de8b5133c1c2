"""A few tiles of a canonical store written as PNG files: what a user brings to ``predict``.

``cellbench data tiles STORE --fold 3 --family digestive --count 3 --out DIR`` writes
``test-tile<i>-<tissue>.png`` (fold 3 is the PanNuke protocol's test fold of split 1), so a
workflow can predict on images that exist as files, exactly as a user's would.
"""

from __future__ import annotations

from pathlib import Path


def write_tiles(
    store: Path, fold: int, out: Path, family: str | None = None, count: int = 3
) -> list[Path]:
    """The first ``count`` tiles of ``fold`` (of ``family``'s tissues) as PNGs in ``out``."""
    import numpy as np
    from PIL import Image

    from cellbench.data.families import tiles_for_family
    from cellbench.data.store import open_fold

    source = open_fold(store, fold)  # validates the fold's files: a bad store exits 3
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for tile in tiles_for_family(source.tissues, family)[:count]:
        path = out / f"test-tile{tile}-{source.tissues[tile]}.png"
        Image.fromarray(np.asarray(source.images[tile])).save(path)
        paths.append(path)
    return paths
