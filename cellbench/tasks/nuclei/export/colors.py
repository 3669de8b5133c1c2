"""One colour per nucleus type, shared by the overlay PNG and the GeoJSON classification.

HoVer-Net's PanNuke colours (``type_info.json`` of its repository), so a user who knows those
overlays reads ours the same way.
"""

from __future__ import annotations

from cellbench.data.families import NUCLEUS_TYPES

TYPE_COLORS: dict[str, tuple[int, int, int]] = {
    "Neoplastic": (255, 0, 0),
    "Inflammatory": (0, 255, 0),
    "Connective": (0, 0, 255),
    "Dead": (255, 255, 0),
    "Epithelial": (255, 165, 0),
}
UNTYPED_NAME = "Nucleus"  # a nucleus whose type is unknown (a model without a type head)
UNTYPED_COLOR = (255, 255, 255)


def type_name(type_id: int) -> str:
    """Type 1..5 -> its PanNuke name; 0 (or anything else) -> ``UNTYPED_NAME``."""
    return NUCLEUS_TYPES[type_id - 1] if 1 <= type_id <= len(NUCLEUS_TYPES) else UNTYPED_NAME


def type_color(type_id: int) -> tuple[int, int, int]:
    return TYPE_COLORS.get(type_name(type_id), UNTYPED_COLOR)
