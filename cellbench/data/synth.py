"""A generated PanNuke-like dataset, written in the raw PanNuke layout.

Realistic enough to learn from, hard enough to mean something:
- H&E colour from a Beer-Lambert stain model (Ruifrok's haematoxylin and eosin optical-density
  vectors), per-tile stain variation, stroma texture with fibres, lumina, cytoplasm, sensor noise;
- the five nucleus types differ in size, shape and stain: large irregular hyperchromatic
  neoplastic nuclei with nucleoli, small round dark inflammatory cells, elongated connective
  nuclei aligned with the fibres, small fragmented pyknotic dead cells, oval vesicular epithelial
  nuclei with a darker rim;
- the type mix, density, background and eosin tint depend on the tissue (19 PanNuke names, grouped
  by family: a family tint shared by its tissues, each tissue its own on top);
- neoplastic and epithelial nuclei cluster, so nuclei touch and overlap; later nuclei occlude
  earlier ones; a few pixels stay claimed by two channels and dead-cell fragments share one id,
  as in the real data; some tiles are empty.

Pixel size is fixed (about 0.5 µm/px like PanNuke's 40x), so a smaller ``size`` is a crop: fewer
nuclei per tile, same nuclei. Each tile is drawn from its own generator seeded by
(seed, fold, tile), so output does not depend on chunking.

The output folder gets a ``synth.json`` marker (generator, folds, tiles, seed, size, layout,
and the ``"files"`` it wrote): ``--force`` replaces only a folder that has it and holds nothing
else, never a folder of the user's; a non-empty folder without it is refused (exit 3).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import polygon

from cellbench import __version__, ownership
from cellbench.atomic import atomic_write_json
from cellbench.data.families import DEFAULT_FAMILIES, TISSUES
from cellbench.data.npyio import NpyWriter
from cellbench.data.staging import staged_dir
from cellbench.errors import BadInputError, UsageError
from cellbench.outputs import file_in_the_way

MARKER = "synth.json"  # written last: marks a complete folder that synth --force may replace
GENERATOR = "cellbench-synth-pannuke"

# Ruifrok & Johnston optical-density vectors (normalised rows).
_H_OD = np.array([0.650, 0.704, 0.286])
_E_OD = np.array([0.072, 0.990, 0.105])

# Relative tile frequencies of PanNuke tissues (roughly as in the real folds).
_TISSUE_FREQ = {
    "Breast": 8,
    "Colon": 5,
    "Adrenal_gland": 2,
    "Esophagus": 2,
    "HeadNeck": 2,
    "Bile-duct": 2,
    "Cervix": 1,
    "Thyroid": 1.2,
    "Liver": 1.2,
    "Testis": 1,
    "Pancreatic": 1,
    "Uterus": 1,
    "Lung": 1,
    "Skin": 1,
    "Prostate": 1,
    "Kidney": 1,
    "Ovarian": 1,
    "Stomach": 1,
    "Bladder": 1,
}


@dataclass(frozen=True)
class NucleusStyle:
    radius: float  # major semi-axis, px
    radius_sd: float
    aspect: tuple[float, float]  # minor/major range
    irregularity: float  # amplitude of radial harmonics
    stain: float  # haematoxylin concentration
    texture: float  # chromatin texture amplitude
    rim: float  # vesicular rim emphasis
    clustered: bool


# Index = mask channel (Neoplastic, Inflammatory, Connective, Dead, Epithelial).
STYLES = (
    NucleusStyle(9.0, 2.0, (0.65, 1.0), 0.18, 1.05, 0.35, 0.1, True),
    NucleusStyle(4.0, 0.6, (0.85, 1.0), 0.04, 1.75, 0.08, 0.0, False),
    NucleusStyle(9.0, 2.0, (0.22, 0.38), 0.06, 1.0, 0.15, 0.0, False),
    NucleusStyle(3.0, 0.8, (0.55, 1.0), 0.30, 1.95, 0.05, 0.0, False),
    NucleusStyle(6.5, 1.0, (0.60, 0.85), 0.06, 0.62, 0.22, 0.6, True),
)

# Family defaults: type mix, nuclei per 256x256 tile, eosin strength, lumen fraction, fibres.
_FAMILY_PROFILE = {
    "glandular": ((0.45, 0.12, 0.16, 0.02, 0.25), 70, 0.45, 0.15, 0.4),
    "digestive": ((0.33, 0.22, 0.14, 0.03, 0.28), 75, 0.50, 0.12, 0.4),
    "urologic": ((0.35, 0.14, 0.26, 0.02, 0.23), 60, 0.55, 0.08, 0.6),
    "respiratory": ((0.30, 0.30, 0.22, 0.03, 0.15), 55, 0.40, 0.25, 0.3),
    "epidermal": ((0.50, 0.20, 0.20, 0.02, 0.08), 65, 0.60, 0.05, 0.7),
}


@dataclass(frozen=True)
class TissueProfile:
    name: str
    mix: np.ndarray  # probabilities of the 5 types
    density: float
    eosin: float
    lumen: float
    fibres: float
    tint: np.ndarray  # (3,) eosin optical-density tint: organs look different under one stain


def tissue_profile(name: str) -> TissueProfile:
    """The family's profile, perturbed by a fixed per-tissue amount (same every run)."""
    family = next(f for f, tissues in DEFAULT_FAMILIES.items() if name in tissues)
    mix, density, eosin, lumen, fibres = _FAMILY_PROFILE[family]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    mix = np.asarray(mix) * rng.uniform(0.6, 1.4, 5)
    return TissueProfile(
        name,
        mix / mix.sum(),
        density * rng.uniform(0.8, 1.2),
        eosin * rng.uniform(0.85, 1.15),
        lumen * rng.uniform(0.5, 1.5),
        fibres,
        # a family tint shared by its tissues, and each tissue's own on top of it
        np.random.default_rng(zlib.crc32(family.encode())).uniform(0.7, 1.3, 3)
        * rng.uniform(0.75, 1.25, 3),
    )


def _lerp_axis(grid: np.ndarray, axis: int, n_out: int, crop: slice) -> np.ndarray:
    """Linear interpolation of ``grid`` along ``axis`` to ``n_out`` points (kept: ``crop``).

    Same sample positions as ``ndimage.zoom(order=1)``: output i reads input i*(n-1)/(n_out-1).
    """
    n_in = grid.shape[axis]
    pos = (np.arange(n_out) * (n_in - 1) / (n_out - 1))[crop]
    left = np.minimum(pos.astype(np.int64), n_in - 2)
    frac = (pos - left).astype(np.float32)
    shape = [1] * grid.ndim
    shape[axis] = len(pos)
    frac = frac.reshape(shape)
    lo = np.take(grid, left, axis=axis)
    hi = np.take(grid, left + 1, axis=axis)
    return lo + (hi - lo) * frac


def _smooth_fields(rng: np.random.Generator, size: int, count: int, cell: int = 24) -> np.ndarray:
    """``count`` zero-mean, unit-std low-frequency noise fields: coarse grids upsampled bilinearly.

    Separable elementwise interpolation: the values of ``ndimage.zoom(order=1)`` at a fraction of
    its cost (zoom was a third of the time of a tile), and no BLAS threads spinning on tiny
    matrix products.
    """
    n = size // cell + 3
    coarse = rng.standard_normal((count, n, n)).astype(np.float32)
    crop = slice(cell, cell + size)
    fields = _lerp_axis(_lerp_axis(coarse, 1, n * cell, crop), 2, n * cell, crop)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    return fields / (fields.std(axis=(1, 2), keepdims=True) + 1e-6)


def _fine_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return noise / (noise.std() + 1e-6)


_THETA = np.linspace(0, 2 * np.pi, 28, endpoint=False)
_COS_THETA, _SIN_THETA = np.cos(_THETA), np.sin(_THETA)
_HARMONICS = np.arange(2, 6)


def _outline(rng, style: NucleusStyle, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon (dy, dx) of one nucleus: an ellipse with random radial harmonics."""
    a = max(1.2, rng.normal(style.radius, style.radius_sd))
    b = a * rng.uniform(*style.aspect)
    # Radial harmonics 2..5, amplitude decreasing as 1/(m-1), random phases.
    amplitude = style.irregularity * rng.uniform(-1, 1, 4) / (_HARMONICS - 1)
    phase = rng.uniform(0, 6.3, 4)
    r = 1 + (amplitude[:, None] * np.cos(_HARMONICS[:, None] * _THETA + phase[:, None])).sum(0)
    x, y = a * r * _COS_THETA, b * r * _SIN_THETA
    c, s = np.cos(angle), np.sin(angle)
    return x * s + y * c, x * c - y * s


def synth_tile(rng: np.random.Generator, tissue: str, size: int = 256, empty: bool = False):
    """One tile: image float64 (size, size, 3) 0..255 and masks float64 (size, size, 6)."""
    profile = tissue_profile(tissue)
    area = (size / 256) ** 2
    n_nuclei = 0 if empty else rng.poisson(profile.density * area * rng.lognormal(0, 0.35))
    masks = np.zeros((size, size, 6), dtype=np.float64)
    owner = np.zeros((size, size), dtype=np.int32)  # drawing index, for rendering
    kinds = rng.choice(5, size=n_nuclei, p=profile.mix)
    stains = np.zeros(n_nuclei + 1, np.float32)
    textures = np.zeros(n_nuclei + 1, np.float32)
    rims = np.zeros(n_nuclei + 1, np.float32)
    fibre_angle = rng.uniform(0, np.pi)
    clusters = rng.uniform(0, size, (rng.integers(1, 4), 2))
    nucleoli: list[tuple[float, float]] = []
    for k, kind in enumerate(kinds, start=1):
        style = STYLES[kind]
        if style.clustered and rng.random() < 0.8:
            centre = clusters[rng.integers(len(clusters))] + rng.normal(0, 14 + 3 * style.radius, 2)
        else:
            centre = rng.uniform(-4, size + 4, 2)
        angle = fibre_angle + rng.normal(0, 0.25) if kind == 2 else rng.uniform(0, np.pi)
        pieces = [(0.0, 0.0)]
        if kind == 3 and rng.random() < 0.4:  # fragmented dead cell: pieces share one id
            pieces += [tuple(rng.normal(0, 4.5, 2)) for _ in range(rng.integers(1, 3))]
        for oy, ox in pieces:
            dy, dx = _outline(rng, style, angle)
            rr, cc = polygon(centre[0] + oy + dy, centre[1] + ox + dx, shape=(size, size))
            if rr.size == 0:
                continue
            # Occlusion: this nucleus hides earlier ones, except in a few pixels where both
            # channels keep their claim (PanNuke's overlap quirk).
            if rng.random() > 0.03:
                masks[rr, cc, :5] = 0
            masks[rr, cc, kind] = k
            owner[rr, cc] = k
        stains[k] = style.stain * rng.uniform(0.85, 1.15)
        textures[k] = style.texture
        rims[k] = style.rim
        if kind == 0:
            nucleoli += [tuple(centre + rng.normal(0, 2.5, 2)) for _ in range(rng.integers(0, 3))]
    nucleus = owner > 0
    masks[..., 5] = ~nucleus

    # Haematoxylin: per-nucleus stain, chromatin texture, darker rim for vesicular nuclei.
    # Near a nucleus border the blurred mask drops towards 0.5: a cheap "distance to the edge".
    edge = 1 - ndimage.gaussian_filter(nucleus.astype(np.float32), 1.2)
    chromatin = _fine_noise(rng, (size, size), 0.8).astype(np.float32)
    hema = stains[owner] * (1 + textures[owner] * chromatin) * (1 + 1.6 * rims[owner] * edge)
    for y, x in nucleoli:
        yy, xx = int(round(y)), int(round(x))
        if 1 <= yy < size - 1 and 1 <= xx < size - 1 and nucleus[yy, xx]:
            hema[yy - 1 : yy + 2, xx - 1 : xx + 2] += 0.6
    hema = ndimage.gaussian_filter(hema, 0.6) + 0.06
    # Eosin: stroma with fibres along one direction, lumina, cytoplasm around nuclei.
    smooth = _smooth_fields(rng, size, 3)
    stroma = 1 + 0.25 * smooth[0]
    # Wavy collagen fibres: a sinusoid across the fibre direction, warped by smooth noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    across = xx * np.sin(fibre_angle) - yy * np.cos(fibre_angle)
    fibres = np.sin(2 * np.pi * across / rng.uniform(5, 9) + 2.5 * smooth[1])
    eosin = profile.eosin * stroma * (1 + 0.18 * profile.fibres * fibres + 0.08 * chromatin)
    eosin += 0.25 * ndimage.gaussian_filter(nucleus.astype(np.float32), 4)
    lumen = smooth[2] > np.quantile(rng.standard_normal(512), 1 - profile.lumen)
    eosin = np.where(lumen & ~nucleus, eosin * 0.08, eosin)
    eosin = np.clip(eosin, 0.02, None)

    # Beer-Lambert with a per-tile stain variation (different labs, different batches).
    h_vec = _H_OD * rng.uniform(0.9, 1.1, 3)
    e_vec = _E_OD * profile.tint * rng.uniform(0.95, 1.05, 3)
    # Channels first while computing: broadcasting over a trailing axis of 3 is several times
    # slower in numpy than over whole planes.
    od = (
        h_vec.astype(np.float32)[:, None, None] * hema
        + e_vec.astype(np.float32)[:, None, None] * eosin
    )
    light = rng.uniform(235, 252)
    image = np.exp(-od, out=od)
    image *= light
    image += 2.5 * rng.standard_normal((3, size, size), dtype=np.float32)
    image = np.rint(np.clip(image, 0, 255, out=image), out=image)
    return image.transpose(1, 2, 0).astype(np.float64, order="C"), masks


def tissues_for_fold(rng: np.random.Generator, n: int) -> list[str]:
    """All 19 tissues first (when n allows), then PanNuke-like frequencies; shuffled."""
    names = list(TISSUES)
    p = np.array([_TISSUE_FREQ[t] for t in names], dtype=float)
    rest = rng.choice(len(names), size=max(0, n - len(names)), p=p / p.sum())
    picked = list(rng.permutation(len(names)))[: min(n, len(names))] + list(rest)
    return [names[i] for i in rng.permutation(picked)]


def read_marker(out: Path) -> dict[str, Any] | None:
    """The ``synth.json`` of a folder written by ``synth``, or None."""
    try:
        marker = json.loads((Path(out) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def _owned(out: Path, marker: dict[str, Any]) -> set[Path]:
    """The files a synth output owns: its marker's ``"files"``, or for a marker written before
    that key, the raw PanNuke files of its folds and layout, never anything else."""
    folds = marker.get("folds") if isinstance(marker.get("folds"), int) else 0
    legacy = []
    for k in range(1, min(folds, 100) + 1):
        if marker.get("layout") == "flat":
            legacy += [f"fold{k}/{name}" for name in ("images.npy", "masks.npy", "types.npy")]
        else:
            legacy += [f"Fold {k}/images/fold{k}/images.npy", f"Fold {k}/images/fold{k}/types.npy"]
            legacy += [f"Fold {k}/masks/fold{k}/masks.npy"]
    return {Path(out).absolute() / MARKER, *ownership.listed_files(Path(out), marker, legacy)}


def _check_out(out: Path, force: bool) -> None:
    """Only an empty folder, or (with ``force``) one that synth wrote and that holds nothing
    else, may be replaced: the folder is replaced whole."""
    blocking = file_in_the_way(out.parent) if out.parent != out else None
    if blocking is not None:  # else mkdir's bare "File exists" names the file, not why
        raise BadInputError(f"{blocking}: a file, not a folder (--out {out} lies below it)")
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    marker = read_marker(out)
    if marker is None:
        raise BadInputError(
            f"{out}: folder is not empty and was not written by data synth (no {MARKER}); "
            "choose a new or empty --out"
        )
    if not force:
        raise UsageError(f"{out}: folder exists and is not empty; use --force to replace it")
    foreign = ownership.survey(out, _owned(out, marker)).foreign
    if foreign:
        raise BadInputError(
            f"{foreign[0]}: not written by data synth, inside {out} that --force would replace; "
            "move it out first"
        )


def synth(
    out: Path,
    folds: int = 3,
    tiles: int = 64,
    seed: int = 0,
    size: int = 256,
    layout: str = "official",
    empty_fraction: float = 0.04,
    force: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[Path]:
    """Write ``folds`` folds of ``tiles`` tiles in the raw PanNuke layout under ``out``.

    ``out`` must be absent or empty; with ``force`` it may also be a previous synth output
    (recognised by its ``synth.json``), which is replaced. Anything else is refused.
    """
    out = Path(out)
    if folds < 1 or tiles < 1 or size < 16:
        raise UsageError("data synth: --folds and --tiles must be >= 1 and --size >= 16")
    if layout not in ("official", "flat"):
        raise UsageError(f"data synth: unknown layout '{layout}' (official or flat)")
    _check_out(out, force)
    marker = {
        "generator": GENERATOR,
        "cellbench_version": __version__,
        "folds": folds,
        "tiles": tiles,
        "seed": seed,
        "size": size,
        "layout": layout,
        "empty_fraction": empty_fraction,
    }
    written = []
    with staged_dir(out) as tmp:
        for fold in range(1, folds + 1):
            tissues = tissues_for_fold(np.random.default_rng([seed, fold]), tiles)

            def make_tile(i: int, fold: int = fold, tissues: list[str] = tissues):
                # One generator per tile: the output does not depend on chunking.
                rng = np.random.default_rng([seed, fold, i])
                return synth_tile(rng, tissues[i], size, empty=rng.random() < empty_fraction)

            written.append(write_raw_fold(tmp, fold, tissues, size, layout, make_tile, progress))
        # what synth wrote, for --force and clean (cellbench.ownership); the marker goes last
        marker[ownership.FILES_KEY] = ownership.written_files(tmp, manifest=MARKER)
        atomic_write_json(tmp / MARKER, marker)
    return [out / p.relative_to(tmp) for p in written]


def write_raw_fold(
    root: Path,
    fold: int,
    tissues: list[str],
    size: int,
    layout: str,
    make_tile: Callable[[int], tuple[np.ndarray, np.ndarray]],
    progress: Callable[[int, int, int], None] | None = None,
) -> Path:
    """Write one raw fold (float64 images and masks, tissue names) from ``make_tile(i)``.

    Tiles are streamed to the .npy files as they are made, so memory stays flat whatever the tile
    count (a writable memory map kept every written page in our RSS: 1.27 GB for 256 tiles).
    Returns the images folder.
    """
    root = Path(root)
    if layout == "official":
        image_dir = root / f"Fold {fold}" / "images" / f"fold{fold}"
        mask_dir = root / f"Fold {fold}" / "masks" / f"fold{fold}"
    else:
        image_dir = mask_dir = root / f"fold{fold}"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    n = len(tissues)
    with (
        NpyWriter(image_dir / "images.npy", np.float64, (n, size, size, 3)) as images,
        NpyWriter(mask_dir / "masks.npy", np.float64, (n, size, size, 6)) as masks,
    ):
        for i in range(n):
            image, mask = make_tile(i)
            images.write(image[None])
            masks.write(mask[None])
            if progress and ((i + 1) % 8 == 0 or i + 1 == n):
                progress(fold, i + 1, n)
    np.save(image_dir / "types.npy", np.array(tissues))
    return image_dir
