"""`cellbench train --family digestive` with no other flag, in a workspace: the refusals when the
feature store to use is not clear (several, no default) or no longer good (deleted, stale).
Through the CLI in a subprocess, from a subfolder of the workspace, as a user types it."""

from __future__ import annotations

import shutil

import pytest

from cellbench.data.prepare import prepare
from cellbench.workspace.file import WORKSPACE_FILE, edit, render_template
from tests.helpers_workspace import cellbench


@pytest.fixture
def ws(workspaces_on, fx_store, tiny_vit):
    """A workspace whose data/store has two feature stores (tags a, b), no default."""
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone

    root = workspaces_on / "ws"
    (root / "sub").mkdir(parents=True)
    (root / WORKSPACE_FILE).write_text(render_template())
    store = shutil.copytree(fx_store, root / "data" / "store")
    backbone = build_backbone(str(tiny_vit), device="cpu")
    for tag in ("a", "b"):
        extract_features(store, backbone, tag=tag)
    return root


def train(ws):
    return cellbench(["train", "--family", "digestive"], ws / "sub", ws.parent.parent)


def test_several_stores_and_no_default_is_refused_with_the_list_and_the_flag(ws):
    result = train(ws)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "several feature stores in the workspace and no default" in line
    assert "data/store/features/a, data/store/features/b" in line
    assert "--features" in line and "cellbench config set defaults.features" in line
    assert not (ws / "runs").exists()  # nothing was started


def test_a_deleted_default_is_refused_naming_it_and_the_fix(ws):
    edit(ws / WORKSPACE_FILE, "defaults.features", "data/store/features/a")
    shutil.rmtree(ws / "data" / "store" / "features" / "a")
    result = train(ws)
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert str(ws / WORKSPACE_FILE) in line
    assert "defaults.features data/store/features/a does not exist" in line
    assert "cellbench features extract" in line and "cellbench config set" in line


def test_a_stale_default_is_refused_naming_it_and_the_command_that_fixes_it(ws, fx_raw):
    edit(ws / WORKSPACE_FILE, "defaults.features", "data/store/features/b")
    prepare(fx_raw, ws / "data" / "store", folds=(1, 2), force=True)  # the source changes
    result = train(ws)
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "defaults.features data/store/features/b is stale" in line
    assert "changed since extraction" in line
    assert "cellbench features extract --data data/store --backbone" in line
    assert "--tag b --force" in line
