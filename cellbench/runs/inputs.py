"""What a run trained on, recorded at its start (``<run>/inputs.json``), and checked later.

A feature store re-extracted into the same tag (``features extract --force``, another backbone,
another profile seed), or a source dataset re-generated, leaves the run's config pointing at
different data. ``train`` records the identity of its inputs when the run starts:

- ``features``: the feature store's manifest fingerprint — backbone (name, model, its kwargs),
  weights sha256, preprocessing, blocks, and the sha256 of each source fold's manifest;
- ``data``: a cellbench dataset's own manifest (a canonical store's ``fold<k>/manifest.json``,
  a generated shapes dataset's ``shapes.json``) by sha256; for an image folder (generated or
  not), the count and sha256 of its image files' relative paths, which decide the carved
  val/test splits (an image added after training would move training images into test); a
  saved Hugging Face dataset has neither, so nothing is recorded for it.

``eval`` and ``train --resume`` compare the recorded identity with what is there now, and
``predict`` the feature store's (the training data does not change a prediction), and refuse
(exit 3) naming each difference, unless ``--force``; ``eval --force`` writes the
differences into its output (``forced_inputs``). A run without ``inputs.json`` (older runs)
is not checked. Only the config's paths are read (no torch), so the CLI checks before loading
any model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cellbench.errors import BadInputError

INPUTS = "inputs.json"
FORMAT = "cellbench-run-inputs"


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _feature_identity(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return {"path": str(folder), "manifest": None}
    if not isinstance(manifest, dict):
        return {"path": str(folder), "manifest": None}
    backbone = manifest.get("backbone") or {}
    folds = manifest.get("folds") or {}
    return {
        "path": str(folder),
        "backbone": backbone.get("name"),
        "model": backbone.get("model"),
        "kwargs": backbone.get("kwargs"),
        "weights sha256": (backbone.get("weights") or {}).get("sha256"),
        "preprocessing": manifest.get("preprocessing"),
        "blocks": manifest.get("blocks"),
        "source folds": {
            str(k): (v or {}).get("source_manifest_sha256")
            for k, v in sorted(folds.items())
            if isinstance(v, dict)
        },
    }


def _data_identity(path: str | None) -> dict[str, Any] | None:
    if not path or "://" in path or path.startswith("hf"):
        return None
    root = Path(path)
    folds = {
        p.name: _sha256(p / "manifest.json")
        for p in sorted(root.glob("fold*"))
        if (p / "manifest.json").is_file()
    }
    if folds:
        return {"path": str(root), "fold manifests sha256": folds}
    if (
        not root.is_dir()
        or (root / "dataset_dict.json").is_file()
        or (root / "state.json").is_file()
    ):
        return None  # gone (eval says so), or a saved Hugging Face dataset: no file list
    from cellbench.data.classify.sources import image_list_digest

    found: dict[str, Any] = {"path": str(root)}
    if (root / "shapes.json").is_file():
        found["shapes.json sha256"] = _sha256(root / "shapes.json")
    try:
        found["images"], found["image list sha256"] = image_list_digest(root)
    except BadInputError:
        found["images"] = found["image list sha256"] = None  # unreadable: compared as such
    return found


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The identity of the inputs a (resolved) config names, from the files there now."""
    data = config.get("data") or {}
    found: dict[str, Any] = {}
    if data.get("features"):
        found["features"] = _feature_identity(Path(data["features"]))
    source = _data_identity(data.get("path"))
    if source is not None:
        found["data"] = source
    return found


def record(run_root: Path, config: dict[str, Any]) -> None:
    from cellbench.atomic import atomic_write_json

    atomic_write_json(Path(run_root) / INPUTS, {"format": FORMAT, **identity(config)})


def recorded(run_root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(run_root) / INPUTS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{Path(run_root) / INPUTS}: unreadable ({exc})") from exc
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "…"


KINDS = ("features", "data")


def differences(
    before: dict[str, Any], now: dict[str, Any], kinds: tuple[str, ...] = KINDS
) -> list[str]:
    """Human lines, one per changed field: ``features weights sha256: eb80… -> 12ab…``."""
    changes = []
    for kind in kinds:
        old, new = before.get(kind), now.get(kind)
        if old is None:
            continue  # not recorded: nothing to hold the run to
        if new is None:
            changes.append(f"{kind}: {old.get('path')} is gone")
            continue
        if "manifest" in new and "manifest" not in old:  # one line, not every field -> null
            changes.append(f"{kind}: {new['path']}/manifest.json is gone or unreadable")
            continue
        for key, was in old.items():
            if key == "path":
                continue
            is_now = new.get(key)
            if isinstance(was, dict) and isinstance(is_now, dict):  # per fold: the recorded ones
                for fold, sha in was.items():
                    if is_now.get(fold) != sha:
                        changes.append(
                            f"{kind} {key} {fold}: {_short(sha)} -> {_short(is_now.get(fold))}"
                        )
            elif was != is_now:
                changes.append(f"{kind} {key}: {_short(was)} -> {_short(is_now)}")
    return changes


def check(
    run_root: Path,
    config: dict[str, Any],
    force: bool,
    action: str,
    kinds: tuple[str, ...] = KINDS,
) -> list[str]:
    """The differences between the run's recorded inputs (of ``kinds``) and today's; raises
    BadInputError (exit 3) naming them unless ``force`` (then they are returned, for the
    caller to record)."""
    before = recorded(run_root)
    if before is None:
        return []
    changes = differences(before, identity(config), kinds)
    if changes and not force:
        shown = "; ".join(changes[:3]) + (
            f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        )
        raise BadInputError(
            f"{Path(run_root).name}: its inputs changed since it trained ({shown}); {action} "
            "refused — --force uses them anyway (recorded), or train a new run"
        )
    return changes


def note_forced(run_root: Path, action: str, changes: list[str]) -> None:
    """Append a ``--force`` use to the run's ``inputs.json`` (``forced``): the run says it went
    on with other inputs than it started with."""
    import time

    from cellbench.atomic import atomic_write_json

    data = recorded(run_root)
    if data is None:
        return
    data.setdefault("forced", []).append(
        {"action": action, "time": time.time(), "changes": changes}
    )
    atomic_write_json(Path(run_root) / INPUTS, data)
