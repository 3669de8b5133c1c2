"""A per-tile head on a slide: each tile's decision (an organ run's tissue) with its confidence,
from the CLS of the backbone pass the nuclei run already makes (``predict --organ-run``).

    head = load_tile_head("organ")                          # the head alone, no backbone
    cellbench.predict_slide(nuclei, "case.svs", out="preds", organ=head)

The head is any run whose task ``decides_tiles`` (``Task.load_tile_head``): it gives
``classes``, ``temperature``, ``probabilities(cls) -> (N, C)`` (calibrated), ``describe()`` and
``backbone_identity()``. Reading the nuclei run's CLS is only right when both runs learned from
features of one backbone: same profile, same weights (sha256), same preprocessing, tiles at the
same µm/px. Anything else is refused (``check_same_backbone``, exit 3) before a tile is read:
a second backbone on every tile would double the slide's main cost, and a CLS of another
backbone would give confident nonsense.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cellbench.errors import BadInputError, UsageError


def _sha256(identity: dict[str, Any]) -> str | None:
    weights = (identity.get("backbone") or {}).get("weights") or {}
    return weights.get("sha256") if isinstance(weights, dict) else None


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two backbone identities (``{"backbone", "preprocessing",
    "mpp"}``), as 'what: a vs b' lines; [] when a CLS of one serves the other."""
    out = []
    name_a = (a.get("backbone") or {}).get("name")
    name_b = (b.get("backbone") or {}).get("name")
    if name_a != name_b:
        out.append(f"backbone profile {name_a} vs {name_b}")
    sha_a, sha_b = _sha256(a), _sha256(b)
    if sha_a != sha_b or sha_a is None:
        out.append(f"weights sha256 {str(sha_a)[:12]} vs {str(sha_b)[:12]}")
    if a.get("preprocessing") != b.get("preprocessing"):
        out.append(f"preprocessing {a.get('preprocessing')} vs {b.get('preprocessing')}")
    if float(a.get("mpp") or 0) != float(b.get("mpp") or 0):
        out.append(f"µm/px {a.get('mpp')} vs {b.get('mpp')}")
    return out


def check_same_backbone(
    model_name: str, model: dict[str, Any], head_name: str, head: dict[str, Any]
) -> None:
    """Refuse (exit 3) a head whose features came from another backbone than the model's."""
    found = differences(model, head)
    if found:
        raise BadInputError(
            f"--organ-run {head_name} and --run {model_name} learned from features of different "
            f"backbones ({'; '.join(found)}): the head cannot read the run's CLS"
        )


def config_identity(config: dict[str, Any]) -> dict[str, Any] | None:
    """A run's backbone identity from its saved config (a dict, no torch): its feature store's
    manifest and ``data.mpp``; None when it names no store (an ``--online-features`` run: its
    identity is known once its backbone is built)."""
    from cellbench.features.store import read_manifest

    data = config.get("data") or {}
    features = data.get("features")
    if not features:
        return None
    manifest = read_manifest(Path(features) / "manifest.json")
    if not manifest or not isinstance(manifest.get("backbone"), dict):
        raise BadInputError(f"{features}: the run's feature store is gone (no manifest.json)")
    return {
        "backbone": manifest["backbone"],
        "preprocessing": manifest.get("preprocessing"),
        "mpp": float(data.get("mpp") or 0.25),
    }


def check_task(name: str, where: str) -> None:
    """Refuse (exit 2) a run whose task makes no per-tile decision."""
    from cellbench.tasks import task_class, task_names

    if not task_class(name).decides_tiles:
        takers = [n for n in task_names() if task_class(n).decides_tiles]
        raise UsageError(
            f"--organ-run {where}: a '{name}' run; it takes a run that decides tiles from the "
            f"backbone's CLS (task {' or '.join(takers)})"
        )


def load_tile_head(
    run: Any,
    runs_dir: str | os.PathLike | None = None,
    checkpoint: str = "best",
    device: Any = "cpu",
) -> Any:
    """The per-tile head of a run (id, name, folder or ``RunPaths``), without its backbone."""
    from cellbench.engine.checkpoint import checkpoint_file, read_checkpoint
    from cellbench.runs.layout import RunPaths
    from cellbench.runs.store import RunStore
    from cellbench.tasks import task_class, task_names

    paths = run if isinstance(run, RunPaths) else RunStore(runs_dir).resolve(run)
    path = checkpoint_file(paths, checkpoint)
    state = read_checkpoint(path)
    name = state.get("task") or state["config"].get("task") or "classify"
    if name not in task_names():
        raise BadInputError(f"{path}: a '{name}' run; no installed task of that name")
    check_task(name, paths.root.name)
    return task_class(name)().load_tile_head(path, device, run=paths, state=state)


def is_tile_head(value: Any) -> bool:
    needed = ("probabilities", "backbone_identity", "classes", "run_name")
    return all(hasattr(value, a) for a in needed)
