"""A trained nuclei run on generated data for the evaluation, export and predict tests: three
folds of 64-px tiles, tokens of a tiny random ViT (tests/helpers_nuclei.py), a tiny decoder
trained for two epochs on all tissues of fold 1 (split 1: fold 2 validates, fold 3 tests)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class NucleiRun:
    root: Path
    runs: Path
    features: Path
    store: Path
    run: object  # RunPaths

    def copy(self, dest: Path) -> NucleiRun:
        """A private copy of the runs folder (tests that write postproc.json or eval/)."""
        from cellbench.runs.store import RunStore

        runs = dest / "runs"
        shutil.copytree(self.runs, runs)
        return NucleiRun(self.root, runs, self.features, self.store, RunStore(runs).resolve("dig"))


def make_nuclei_run(root: Path, tiles: int = 10, epochs: int = 2, *extra: str) -> NucleiRun:
    """``extra``: more --set overrides (the slide tests train longer at a constant LR)."""
    pytest.importorskip("cellbench.tasks.nuclei.task")  # the nuclei task (issue 11, engine)
    import yaml  # noqa: I001 (tests.helpers_nuclei is first-party once the nuclei task lands)

    from cellbench.data.prepare import prepare
    from cellbench.data.synth import synth
    from cellbench.engine.session import TrainRequest, train
    from cellbench.features.extract import extract_features
    from cellbench.models.backbones import build_backbone
    from tests.helpers_nuclei import NUCLEI_VIT, nuclei_overrides

    synth(root / "raw", folds=3, tiles=tiles, seed=4, size=64, empty_fraction=0.0)
    prepare(root / "raw", root / "store")
    profile = root / "tiny-vit.yaml"
    profile.write_text(yaml.safe_dump(NUCLEI_VIT))
    backbone = build_backbone(str(profile), None, device="cpu")
    features, _ = extract_features(root / "store", backbone, tag="tiny", batch_size=8)
    request = TrainRequest(
        overrides=nuclei_overrides(features, "data.family=null", f"train.epochs={epochs}", *extra),
        run="dig",
        runs_dir=root / "runs",
    )
    paths, result = train(request)
    assert result.status == "completed", result.reason
    return NucleiRun(root, root / "runs", features, root / "store", paths)


@pytest.fixture(scope="session")
def nuclei_run(tmp_path_factory) -> NucleiRun:
    return make_nuclei_run(tmp_path_factory.mktemp("nuclei-run"))


def make_online_run(source: NucleiRun, dest: Path, train_device: str = "meta") -> NucleiRun:
    """An ``--online-features`` run on ``source``'s store (its tiny ViT run on each batch), one
    epoch on the CPU, whose saved config then says ``train.device=train_device``: the meta
    device by default, where nothing can compute, so a load that builds the backbone on
    ``train.device`` instead of the device asked cannot pass unnoticed."""
    import torch

    from cellbench.engine.session import TrainRequest, train
    from tests.helpers_nuclei import nuclei_overrides

    extra = (
        "data.features=null",
        f"data.path={source.store}",
        "data.family=null",
        "nuclei.online_features=true",
        f"nuclei.backbone={source.root / 'tiny-vit.yaml'}",
        "train.epochs=1",
        "train.device=cpu",
    )
    request = TrainRequest(
        overrides=nuclei_overrides(source.features, *extra), run="online", runs_dir=dest / "runs"
    )
    paths, result = train(request)
    assert result.status == "completed", result.reason
    for checkpoint in (paths.best_checkpoint, paths.last_checkpoint):
        state = torch.load(checkpoint, weights_only=True)
        state["config"]["train"]["device"] = train_device
        torch.save(state, checkpoint)
    return NucleiRun(source.root, dest / "runs", source.features, source.store, paths)
