"""The workspace file ``cellbench.yaml``: where it is, what it holds, and editing it safely.

A workspace is a folder holding ``cellbench.yaml``. Commands find it the way git finds its
repository: from the current folder up through its parents, the current folder always looked at,
never walking up *into* a ceiling folder (``$CELLBENCH_CEILING_DIRECTORIES``, colon-separated
absolute paths, the semantics of ``GIT_CEILING_DIRECTORIES``; unset, the ceiling is ``$HOME``,
so a stray ``~/cellbench.yaml`` never captures every project below it), and stopping at the
filesystem root. ``$CELLBENCH_WORKSPACE`` names one (a folder or its file) without searching;
``CELLBENCH_WORKSPACE=none`` disables workspaces (today's ``./runs``, ``./data`` behaviour).

Paths inside the file are relative to the file's folder (absolute ones are kept as they are), so a
workspace moved or copied whole keeps working. Edits (``cellbench config set``, the defaults that
``features extract``, ``data prepare`` and ``quickstart`` record) take a lock, re-read the file,
change one key, check the result and write it atomically; ruamel.yaml keeps the user's comments
and key order.
"""

from __future__ import annotations

import difflib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellbench.dotted import flatten
from cellbench.errors import BadInputError, UsageError

WORKSPACE_FILE = "cellbench.yaml"
WORKSPACE_ENV = "CELLBENCH_WORKSPACE"
CEILING_ENV = "CELLBENCH_CEILING_DIRECTORIES"
LOCK_NAME = ".cellbench.yaml.lock"
VERSION = 1

# folder keys and their value when the file does not give one (today's layout)
PATH_DEFAULTS = {
    "data": "data",
    "runs": "runs",
    "sweeps": "sweeps",
    "workflows": "workflows",
    "profiles": "profiles",
}
# defaults.* keys besides defaults.profiles.<task>
DEFAULT_KEYS = ("data", "features", "sweep")

TEMPLATE = """\
# A cellbench workspace (docs/workspace.md). Every cellbench command run in this folder or
# below it uses these folders; paths are relative to this file.
version: 1
paths:
  data: data              # data stores (data prepare) and their features/
  runs: runs              # one folder per run
  sweeps: sweeps          # one folder per sweep
  workflows: workflows    # gated studies (cellbench workflow)
  profiles: profiles      # your profiles, found by name before the shipped ones
# What commands use when no flag says otherwise. features extract, data prepare and quickstart
# fill the empty ones; cellbench config set|unset KEY edits them.
defaults:
  data:                   # a data store (STORE), e.g. data/pannuke
  features:               # a feature store (STORE/features/TAG)
  sweep:                  # what a bare `cellbench sweep` runs (a sweep file or shipped name)
  profiles:               # the profile `cellbench train` uses per task when --profile is not given
{profiles}"""


def task_names() -> tuple[str, ...]:
    """Task names a ``defaults.profiles.<task>`` key may use (the registry's, without torch:
    shipped, registered and entry-point tasks)."""
    from cellbench.tasks import task_names as registered

    return tuple(registered())


def render_template() -> str:
    return TEMPLATE.format(profiles="".join(f"    {t}:\n" for t in task_names()))


def known_keys() -> list[str]:
    keys = ["version"] + [f"paths.{k}" for k in PATH_DEFAULTS]
    keys += [f"defaults.{k}" for k in DEFAULT_KEYS]
    keys += [f"defaults.profiles.{t}" for t in task_names()]
    return keys


# --------------------------------------------------------------------------- finding


def _ceilings() -> list[Path]:
    raw = os.environ.get(CEILING_ENV)
    if raw is None:
        home = os.environ.get("HOME")
        return [Path(os.path.realpath(home))] if home else []
    return [Path(os.path.realpath(p)) for p in raw.split(":") if p and os.path.isabs(p)]


def find_workspace_file(start: str | os.PathLike | None = None) -> Path | None:
    """The ``cellbench.yaml`` that governs ``start`` (default: the current folder), or None."""
    named = os.environ.get(WORKSPACE_ENV, "").strip()
    if named.lower() == "none":
        return None
    if named:
        path = Path(named).expanduser().absolute()
        if path.is_dir() or path.suffix not in (".yaml", ".yml"):
            path = path / WORKSPACE_FILE
        if not path.is_file():
            raise BadInputError(f"{path}: no workspace file there ({WORKSPACE_ENV}={named})")
        return path
    here = Path(os.path.realpath(start if start is not None else os.getcwd()))
    ceilings = _ceilings()
    while True:
        candidate = here / WORKSPACE_FILE
        if candidate.is_file():
            return candidate
        parent = here.parent
        if parent == here or parent in ceilings:
            return None
        here = parent


# --------------------------------------------------------------------------- reading


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate(data: Any, where: str) -> dict[str, Any]:
    """The file's flat ``{dotted key: value}``; a problem raises one line naming the file."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: expected a mapping (version, paths, defaults)")
    for section in ("paths", "defaults", "defaults.profiles"):
        node: Any = data
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            raise BadInputError(f"{where}: {section} must be a mapping, got {node!r}")
    known = known_keys()
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    flat: dict[str, Any] = {}
    for key, value in flatten(data, keep_empty=True).items():
        if value == {} and key in sections:
            continue  # a known section left empty: nothing set
        if key not in known:
            # an unknown section left empty (``pathz: {}``) is a typo too, not nothing
            names = sorted(sections | set(known)) if value == {} else known
            raise BadInputError(f"{where}: unknown key '{key}'{_did_you_mean(key, names)}")
        if isinstance(value, str) and "\0" in value:
            raise BadInputError(f"{where}: {key} holds a NUL character")
        if key == "version":
            if value != VERSION:
                raise BadInputError(f"{where}: version {value!r} is not one this cellbench reads")
        elif key.startswith("paths."):
            if not isinstance(value, str) or not value.strip():
                raise BadInputError(f"{where}: {key} must be a folder path, got {value!r}")
        elif value is not None and not isinstance(value, str):
            raise BadInputError(f"{where}: {key} must be text or empty, got {value!r}")
        flat[key] = value
    return flat


def read_workspace(path: Path) -> dict[str, Any]:
    from cellbench.yamlio import read_yaml  # UTF-8, duplicate keys, one line naming the file

    return validate(read_yaml(path), str(path))


@dataclass
class Workspace:
    """A loaded workspace: its file and its flat keys (``paths.runs``, ``defaults.features``)."""

    file: Path
    values: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.file.parent

    def get(self, key: str) -> Any:
        if key.startswith("paths.") and not self.values.get(key):
            return PATH_DEFAULTS[key.split(".", 1)[1]]
        return self.values.get(key)

    def resolve(self, value: str | os.PathLike) -> Path:
        """A path of the file (relative to it), as a path usable from the current folder:
        relative when it lies below the current folder (output stays as today's at the
        workspace root), absolute otherwise."""
        path = Path(value).expanduser()
        full = path if path.is_absolute() else self.root / path
        full = Path(os.path.normpath(full))
        try:
            return full.relative_to(Path.cwd())
        except ValueError:
            return full

    def folder(self, name: str) -> Path:
        """``paths.<name>`` (data, runs, sweeps, workflows, profiles) resolved."""
        return self.resolve(self.get(f"paths.{name}"))

    def default(self, key: str) -> str | None:
        value = self.values.get(f"defaults.{key}")
        return value or None

    def default_path(self, key: str) -> Path | None:
        value = self.default(key)
        return None if value is None else self.resolve(value)

    def shown(self, path: str | os.PathLike) -> str:
        """A path as the workspace writes and shows it: relative to its root when inside."""
        full = Path(os.path.realpath(Path(path).expanduser()))
        try:
            return str(full.relative_to(os.path.realpath(self.root)))
        except ValueError:
            return str(full)

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` lies in the workspace (its folder or its data folder)."""
        full = Path(os.path.realpath(path))
        for top in (self.root, self.folder("data")):
            top = Path(os.path.realpath(top))
            if full == top or top in full.parents:
                return True
        return False


def current(start: str | os.PathLike | None = None) -> Workspace | None:
    """The workspace governing the current folder, loaded, or None."""
    path = find_workspace_file(start)
    if path is None:
        return None
    return Workspace(path, read_workspace(path))


# --------------------------------------------------------------------------- editing


def check_key(key: str) -> str:
    """A key ``config set|unset`` may edit (exit 2 with a did-you-mean otherwise)."""
    known = [k for k in known_keys() if k != "version"]
    if key not in known:
        raise UsageError(
            f"unknown key '{key}'{_did_you_mean(key, known)}; keys: {', '.join(known)}"
        )
    return key


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: comments and key order survive an edit
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _lock(file: Path):
    from filelock import FileLock

    return FileLock(str(file.parent / LOCK_NAME), timeout=30)


def edit(file: Path, key: str, value: Any, only_if_empty: bool = False) -> bool:
    """Set ``key`` (dotted) to ``value`` (None: empty it) in ``file``, under the workspace lock,
    atomically. ``only_if_empty``: leave a value already there (a default a command records).
    Returns whether the file changed."""
    from filelock import Timeout

    from cellbench.atomic import atomic_write_text

    try:
        with _lock(file):
            y = _yaml()
            try:
                data = y.load(file.read_text(encoding="utf-8"))
            except Exception as exc:  # ruamel's many error classes: validated below by read_yaml
                read_workspace(file)  # names the file, line and problem
                raise BadInputError(f"{file}: cannot edit ({exc})") from exc
            if data is None:
                data = y.load("{}")
            parts = key.split(".")
            node = data
            for part in parts[:-1]:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            old = node.get(parts[-1])
            if (only_if_empty and old) or old == value:
                return False
            node[parts[-1]] = value
            buffer = io.StringIO()
            y.dump(data, buffer)
            text = buffer.getvalue()
            import yaml

            from cellbench.yamlio import UniqueKeyLoader

            validate(yaml.load(text, Loader=UniqueKeyLoader), str(file))  # noqa: S506
            atomic_write_text(file, text)
            return True
    except Timeout as exc:
        from cellbench.errors import RunConflict

        raise RunConflict(f"{file}: another cellbench process is editing it") from exc
