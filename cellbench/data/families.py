"""PanNuke vocabulary: tissue names, nucleus types, organ families and the fold protocol.

Pure Python (no numpy at import): the CLI imports this to validate ``--family`` cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cellbench.errors import UsageError

# The 19 tissue names exactly as PanNuke's types.npy spells them.
TISSUES: tuple[str, ...] = (
    "Adrenal_gland",
    "Bile-duct",
    "Bladder",
    "Breast",
    "Cervix",
    "Colon",
    "Esophagus",
    "HeadNeck",
    "Kidney",
    "Liver",
    "Lung",
    "Ovarian",
    "Pancreatic",
    "Prostate",
    "Skin",
    "Stomach",
    "Testis",
    "Thyroid",
    "Uterus",
)

# Mask channels 0..4 of raw PanNuke, and store type ids 1..5 (0 = background).
NUCLEUS_TYPES: tuple[str, ...] = ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")
# type ids 0 (background, or no type) and 1..5 (NUCLEUS_TYPES): the NT head's channels
TYPE_CHANNELS = len(NUCLEUS_TYPES) + 1
BACKGROUND_CHANNEL = 5  # raw channel 5 is background, never a nucleus class

DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "glandular": ("Breast", "Prostate", "Thyroid", "Pancreatic", "Adrenal_gland"),
    "digestive": ("Colon", "Stomach", "Esophagus", "Bile-duct"),
    "urologic": ("Kidney", "Bladder", "Testis", "Ovarian", "Uterus", "Cervix"),
    "respiratory": ("Lung", "Liver"),
    "epidermal": ("Skin", "HeadNeck"),
}

# PanNuke protocol: split -> (train, val, test) folds.
_PROTOCOL: dict[int, tuple[int, int, int]] = {1: (1, 2, 3), 2: (2, 1, 3), 3: (3, 2, 1)}
FOLDS: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class SplitFolds:
    """The folds one PanNuke protocol split trains, validates and tests on."""

    split: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def for_stage(self, stage: str) -> tuple[int, ...]:
        if stage not in ("train", "val", "test"):
            raise UsageError(f"unknown stage '{stage}': expected train, val or test")
        return getattr(self, stage)


def folds_for_split(split: int) -> SplitFolds:
    """PanNuke protocol: split 1 = train 1, val 2, test 3; split 2 = (2,1,3); split 3 = (3,2,1)."""
    if split not in _PROTOCOL:
        raise UsageError(f"data.split must be 1, 2 or 3 (PanNuke protocol), got {split!r}")
    train, val, test = _PROTOCOL[split]
    return SplitFolds(split=split, train=(train,), val=(val,), test=(test,))


def check_tissue(name: str) -> str:
    if name not in TISSUES:
        raise UsageError(f"unknown tissue '{name}'; known: {', '.join(TISSUES)}")
    return name


def resolve_families(
    override: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """The family map: the DESIGN.md defaults, or ``config.data.families`` when given.

    An override must name only known tissues and put each tissue in at most one family, so that
    ``family_of`` is a function; tissues it leaves out simply belong to no family.
    """
    if not override:
        return dict(DEFAULT_FAMILIES)
    families: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for family, tissues in override.items():
        for tissue in tissues:
            if tissue not in TISSUES:
                raise UsageError(f"data.families.{family}: unknown tissue '{tissue}'")
            if tissue in owner:
                raise UsageError(
                    f"data.families: tissue '{tissue}' is in both '{owner[tissue]}' and '{family}'"
                )
            owner[tissue] = family
        families[family] = tuple(tissues)
    return families


def check_family(family: str, families: Mapping[str, Sequence[str]] | None = None) -> str:
    known = resolve_families(families)
    if family not in known:
        import difflib

        close = difflib.get_close_matches(family, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown family '{family}'{hint}; known: {', '.join(known)}")
    return family


def family_of(tissue: str, families: Mapping[str, Sequence[str]] | None = None) -> str | None:
    """The family a tissue belongs to, or None when the family map leaves it out."""
    check_tissue(tissue)
    for family, tissues in resolve_families(families).items():
        if tissue in tissues:
            return family
    return None


def tiles_for_family(
    tissues: Iterable[str],
    family: str | None,
    families: Mapping[str, Sequence[str]] | None = None,
) -> list[int]:
    """Indices of the tiles whose tissue belongs to ``family`` (all tiles when family is None)."""
    tissues = list(tissues)
    if family is None:
        return list(range(len(tissues)))
    members = set(resolve_families(families)[check_family(family, families)])
    return [i for i, tissue in enumerate(tissues) if tissue in members]
