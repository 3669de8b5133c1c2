"""Trial names: readable, valid run names; the train command that trains the config again."""

from __future__ import annotations

from cellbench.runs.layout import NAME_RE
from cellbench.sweep.trials import format_value, make_trial, run_name


def test_names_read_like_the_study_and_are_valid_run_names():
    name = run_name("demo", "t007", {"train.lr": 0.003, "train.batch_size": 32}, 1)
    assert name == "demo-t007-lr3e-3-bs32-s1"
    odd = run_name("s", "t001", {"model.name": "hf-hub:org/model@v1", "data.path": "a b/c"}, None)
    assert NAME_RE.match(odd) and "/" not in odd and " " not in odd
    long = run_name("s", "t001", {f"model.args.k{i}": [1, 2, 3] for i in range(40)}, 3)
    assert NAME_RE.match(long) and len(long) <= 120 and long.endswith("-s3")


def test_value_formats():
    assert format_value(0.0001) == "1e-4"
    assert format_value(2.5e-3) == "2.5e-3"
    assert format_value(0.05) == "0.05"
    assert format_value([48, 72, 72]) == "48-72-72"
    assert format_value(True) == "on"


def test_command_reproduces_the_config():
    trial = make_trial(
        "demo", 3, "grid", {"model.args.channels": [4, 8]}, 2, ["data.path=/d"], 5, "demo", False
    )
    assert trial.command() == (
        "cellbench train --profile demo --set data.path=/d "
        "--set 'model.args.channels=[4, 8]' --set train.epochs=5 --set train.seed=2"
    )
