"""The backbone that made a feature store, rebuilt to serve new images (organ and nuclei predict).

One function for both tasks: same profile, same preprocessing, same blocks and the same weights
(sha256 checked) as the extraction, so a new image gets the CLS and the tokens the head or the
decoder trained on. A store whose manifest no longer describes its backbone is refused with one
line naming the file, never a KeyError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellbench.errors import BadInputError


def store_backbone(features: str | Path, device) -> Any:
    """The ``Backbone`` (cellbench.models.backbones) that extracted the store at ``features``."""
    from cellbench.features.store import read_manifest
    from cellbench.models.backbones import build_backbone, load_backbone_profile

    manifest_path = Path(features) / "manifest.json"
    manifest = read_manifest(manifest_path)
    if manifest is None:
        raise BadInputError(f"{features}: the run's feature store is gone (no manifest.json)")
    described = manifest.get("backbone")
    weights = described.get("weights") if isinstance(described, dict) else None
    if not isinstance(described, dict) or not isinstance(weights or {}, dict):
        raise BadInputError(f"{manifest_path}: no backbone description (damaged manifest)")
    source = str(described.get("profile") or "")
    name = source.removeprefix("shipped:") if source != "timm" else described.get("name")
    if not name:
        raise BadInputError(f"{manifest_path}: the backbone has no profile or name")
    profile = load_backbone_profile(str(name))
    if profile.preprocessing() != manifest.get("preprocessing"):
        raise BadInputError(
            f"{source}: preprocessing changed since the features were extracted; predictions "
            "would not match training"
        )
    weights = weights or {}
    path = weights.get("path") if weights.get("source") == "file" else None
    backbone = build_backbone(
        profile,
        path,
        pretrained=weights.get("source") == "hub",
        blocks=manifest.get("blocks"),
        device=device,
    )
    if backbone.weights.get("sha256") != weights.get("sha256"):
        raise BadInputError(
            f"{path or name}: backbone weights differ from those the features were extracted "
            "with (sha256 mismatch)"
        )
    return backbone
