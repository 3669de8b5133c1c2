"""Build a folder under a temporary name next to its destination; rename it when complete.

A crash, an error or Ctrl-C at any point leaves either the previous folder or nothing under the
final name: never a half-written dataset that looks complete. Leftover staging folders of dead
processes are removed by the next run.

The caller decides whether ``final`` may be replaced (see ``synth`` and ``prepare``); this module
only refuses the folders that can never be: the filesystem root, the home folder, the current
working directory, and any folder above them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from cellbench.errors import UsageError
from cellbench.runs.lock import pid_alive


def check_replaceable(final: Path) -> Path:
    """``final`` resolved, or UsageError when it is, or contains, the cwd or the home folder.

    Replacing the cwd fails half-way (EBUSY) and would leave a staging folder behind; replacing
    the home folder or the root would delete everything in it.
    """
    final = Path(final).expanduser().resolve()
    if final == Path(final.anchor):
        raise UsageError(f"{final}: refusing to replace the filesystem root")
    protected = {"the current directory": Path.cwd(), "the home folder": Path("~").expanduser()}
    for what, folder in protected.items():
        folder = folder.resolve()
        if final == folder or final in folder.parents:
            raise UsageError(f"{final}: refusing to replace {what} or a folder above it")
    return final


def remove_stale(final: Path) -> None:
    """Remove staging/old folders of ``final`` left behind by processes that died."""
    for leftover in final.parent.glob(f".{final.name}.*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final`` (old one removed)."""
    final = check_replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
