"""Defaults a workspace remembers, recorded by the commands that make things and read back by
the commands that need them.

Recorded (only when the key is empty, and only for a store inside the workspace or its data
folder, so a test or a one-off store elsewhere never rewrites it): ``features extract`` the
feature store (``defaults.features``), ``data prepare`` the data store (``defaults.data``),
``quickstart`` the profile of each task it trained (``defaults.profiles.<task>``).

Read: ``train`` and ``sweep`` take the default feature store when the task needs one and no
``--features``/``data.features`` was given. A default that is gone or stale is refused, naming
it and the command that fixes it (exit 3); with no default and several stores in the workspace,
the choice is the user's (exit 2, with the list and the flag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cellbench.errors import BadInputError, UsageError
from cellbench.workspace.file import Workspace, current, edit

Say = Callable[[str], None]


def record_default(
    key: str, value: str | Path, say: Say | None = None, is_path: bool = True
) -> bool:
    """Make ``value`` the workspace's ``defaults.<key>`` when that is empty. Returns whether
    it was recorded (no workspace, a key already set, a store outside it: False)."""
    ws = current()
    if ws is None or ws.default(key) is not None:
        return False
    if is_path and not ws.contains(value):
        return False
    shown = ws.shown(value) if is_path else str(value)
    if edit(ws.file, f"defaults.{key}", shown, only_if_empty=True) and say:
        say(f"workspace: defaults.{key} = {shown} (cellbench config show)")
        return True
    return False


def default_profile(ws: Workspace | None, task: str) -> str | None:
    """``defaults.profiles.<task>``: a profile name, or a path made usable from here."""
    if ws is None:
        return None
    value = ws.default(f"profiles.{task}")
    if value is None:
        return None
    if value.endswith((".yaml", ".yml")) or "/" in value:
        return str(ws.resolve(value))
    return value


@dataclass
class Chosen:
    path: Path
    shown: str  # as the workspace writes it
    why: str  # "workspace default" or "the workspace's only feature store"


def _fix_command(ws: Workspace, path: Path, backbone: str | None) -> str:
    store = ws.shown(path.parent.parent)
    return (
        f"cellbench features extract --data {store} --backbone {backbone or 'NAME'} "
        f"--tag {path.name} --force"
    )


def choose_feature_store(ws: Workspace | None, allow_stale: bool = False) -> Chosen | None:
    """The feature store to train on when none was given: the workspace default (checked:
    gone is refused, stale too unless ``allow_stale``, i.e. ``--force``), else the workspace's
    only one; None when there is no workspace or no store at all."""
    from cellbench.workspace.stores import feature_store_health, find_feature_stores

    if ws is None:
        return None
    value = ws.default("features")
    if value is not None:
        path = ws.resolve(value)
        change = "cellbench config set defaults.features STORE/features/TAG (or --features)"
        if not path.is_dir():
            raise BadInputError(
                f"{ws.file}: defaults.features {value} does not exist (deleted, or not made "
                "yet); make it "
                f"(cellbench features extract --data STORE --backbone NAME --tag {path.name}, "
                f"or cellbench quickstart) or choose another: {change}"
            )
        health = feature_store_health(path, full=True)
        if health.problems and not allow_stale:
            raise BadInputError(
                f"{ws.file}: defaults.features {value} is stale ({health.problems[0]}); "
                f"extract it again: {_fix_command(ws, path, health.backbone)}, or choose "
                f"another: {change}"
            )
        return Chosen(path, value, "workspace default")
    stores = find_feature_stores(ws.folder("data"))
    if len(stores) == 1:
        return Chosen(stores[0], ws.shown(stores[0]), "the workspace's only feature store")
    if len(stores) > 1:
        listed = ", ".join(ws.shown(s) for s in stores)
        raise UsageError(
            f"several feature stores in the workspace and no default: {listed}; choose one with "
            "--features STORE/features/TAG, or once for all with cellbench config set "
            "defaults.features STORE/features/TAG"
        )
    return None
