"""Sweep files: shipped ones load, bad ones fail with one line naming the file (exit 3)."""

from __future__ import annotations

import pytest

from cellbench.errors import BadInputError, UsageError
from cellbench.sweep.phases import resolve_phase
from cellbench.sweep.spec import from_command_line, load_sweep_file, shipped_sweeps


def test_shipped_sweeps_are_the_seed_studies():
    assert {"tiny_imagenet_grid", "flowers_phases", "demo_phases"} <= set(shipped_sweeps())
    study = load_sweep_file("tiny_imagenet_grid", [], None, None)
    coarse = resolve_phase(study, study.phases[0], [], [])
    assert len(coarse) == 48  # seeds/002 §5: 3 lr x 2 batch x 2 wd x 2 M x 2 channels
    assert all("--profile tiny_imagenet_inception" in t.command() for t in coarse)
    flowers = load_sweep_file("flowers_phases", [], None, None)
    assert [p.kind for p in flowers.phases] == ["smoke", "grid", "seeds", "final"]
    smoke = resolve_phase(flowers, flowers.phases[0], [], [])
    assert [t.params["model.name"] for t in smoke] == ["convnextv2_tiny", "convnextv2_base"]


def test_the_five_families_ship_as_one_sweep_of_nuclei_decoders():
    study = load_sweep_file(
        "cellvit_families", ["data.features=f/features/h-optimus-0"], None, None
    )
    trials = resolve_phase(study, study.phases[0], [], [])
    assert [t.params["data.family"] for t in trials] == [
        "glandular",
        "digestive",
        "urologic",
        "respiratory",
        "epidermal",
    ]
    assert all("--profile cellvit-optimus" in t.command() for t in trials)
    assert all("data.features=f/features/h-optimus-0" in t.command() for t in trials)


@pytest.mark.parametrize(
    "text, message",
    [
        ("profile: demo\nspace: {train.lr: [1, 2]\n", "malformed YAML at line"),
        ("profile: demo\nspaces: {train.lr: [1, 2]}\n", "did you mean 'space'"),
        ("profile: demo\nspace: {train.lrr: [1, 2]}\n", "did you mean 'train.lr'"),
        ("profile: demo\nspace: {train.lr: [1]}\nphases: [{kind: grd}]\n", "did you mean 'grid'"),
        ("profile: demo\nspace: {train.lr: [1]}\nphases: [{kind: final}]\n", "needs a phase"),
        ("profile: demo\nspace: {train.lr: [1]}\nseeds: 0\n", "at least 1"),
        ("profile: demo\n", "no space"),
    ],
)
def test_bad_sweep_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message) as info:
        load_sweep_file(str(path), [], None, None)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_sweep_file_suggests_a_shipped_one():
    with pytest.raises(BadInputError, match="did you mean 'demo_phases'"):
        load_sweep_file("demo_phase", [], None, None)


def test_profile_path_in_a_sweep_file_is_relative_to_the_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: classify\n")
    (tmp_path / "study.yaml").write_text("profile: mine.yaml\nspace: {train.lr: [0.1]}\n")
    spec = load_sweep_file(str(tmp_path / "study.yaml"), [], None, None)
    assert spec.profile == str((tmp_path / "mine.yaml").resolve())


def test_command_line_needs_a_grid_and_a_valid_name():
    with pytest.raises(UsageError, match="--grid"):
        from_command_line("demo", [], [], None, None, "x")
    with pytest.raises(UsageError, match="sweep name"):
        from_command_line("demo", [], ["train.lr=0.1,0.2"], None, None, "a b")
    spec = from_command_line("demo", [], ["train.lr=0.1,0.2"], 2, 3, "study")
    trials = resolve_phase(spec, spec.phases[0], [], [])
    assert [t.seed for t in trials] == [1, 2, 1, 2]
    assert all("train.epochs=3" in t.sets for t in trials)


@pytest.mark.parametrize(
    "grid, seeds, epochs, message",
    [
        ("train.epochs=1,2", None, 1, "train.epochs varies in the space"),
        ("train.seed=5,6", 2, None, "train.seed varies in the space"),
        ("data.split_seed=1,2", None, None, "data.split_seed cannot vary"),
    ],
)
def test_a_space_may_not_vary_what_the_sweep_fixes(tmp_path, grid, seeds, epochs, message):
    """--epochs/--seeds are appended after the space's values and would replace them silently:
    two configs trained alike, ranked apart. The same in a sweep file names the file."""
    with pytest.raises(UsageError, match=message):
        from_command_line("demo", [], [grid], seeds, epochs, "study")
    key, values = grid.split("=")
    lines = ["profile: demo", f"space: {{{key}: [{values}]}}"]
    lines += [f"seeds: {seeds}"] if seeds else []
    lines += [f"epochs: {epochs}"] if epochs else []
    path = tmp_path / "study.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=message) as info:
        load_sweep_file(str(path), [], None, None)
    assert str(path) in str(info.value)
    # varying them alone is a study of epochs or seeds
    if key != "data.split_seed":
        spec = from_command_line("demo", [], [grid], None, None, "study")
        trials = resolve_phase(spec, spec.phases[0], [], [])
        assert [t.sets[-1] for t in trials] == [f"{key}={v}" for v in values.split(",")]
