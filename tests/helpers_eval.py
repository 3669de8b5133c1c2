"""One real tiny classification run, trained once per test session, for the eval/predict tests.

``trained_run(tmp_path_factory)`` writes the shapes dataset (4 classes x 24 images, 32x32),
trains ``simple_cnn`` for 4 epochs through the engine (``cellbench.engine.session.train``) and
returns the pristine runs folder. Tests that write (eval files, events) work on a copy made with
``copy_runs(tmp_path)``, so they never see each other's outputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cellbench.runs.layout import RunPaths

RUN_NAME = "tiny"
TRAIN_SETTINGS = [
    "data.image_size=32",
    "train.batch_size=16",
    "train.epochs=4",
    "train.lr=3e-3",
    "model.name=simple_cnn",
    "model.args={channels: [8, 16], hidden: 32}",
]
_cache: dict[str, Path] = {}


def trained_run(tmp_path_factory) -> Path:
    """The runs folder holding run 0001-tiny (trained on first use, then reused)."""
    if "runs" not in _cache:
        from cellbench.data.classify.shapes import write_shapes_dataset
        from cellbench.engine.session import TrainRequest, train

        base = tmp_path_factory.mktemp("eval-run")
        data = write_shapes_dataset(base / "shapes", n_per_class=24, image_size=32, seed=0).root
        request = TrainRequest(
            overrides=[f"data.path={data}", *TRAIN_SETTINGS], run=RUN_NAME, runs_dir=base / "runs"
        )
        _, result = train(request)
        assert result.status == "completed", result.reason
        _cache["runs"] = base / "runs"
    return _cache["runs"]


def copy_runs(template: Path, dst: Path) -> tuple[Path, RunPaths]:
    """A private copy of the runs folder; returns (runs root, the run's paths)."""
    root = dst / "runs"
    shutil.copytree(template, root)
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return root, RunPaths(run_dir)


def edit_checkpoint(path: Path, **changes) -> None:
    """Rewrite fields of a real checkpoint (config sections are merged key by key)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if key == "config":
            for section, fields in value.items():
                if isinstance(fields, dict):
                    state["config"].setdefault(section, {}).update(fields)
                else:
                    state["config"][section] = fields
        else:
            state[key] = value
    torch.save(state, path)
