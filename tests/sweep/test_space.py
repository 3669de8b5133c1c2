"""Search spaces: --grid parsing, ranges, log ranges, model choices, combinations."""

from __future__ import annotations

import pytest

from cellbench.errors import UsageError
from cellbench.sweep.space import expand_values, grid, parse_grid_option, split_values, to_sets


def test_grid_option_values_are_typed_like_the_config():
    assert parse_grid_option("train.lr=1e-3,3e-3") == ("train.lr", [0.001, 0.003])
    assert parse_grid_option("train.batch_size=32,64") == ("train.batch_size", [32, 64])
    # commas inside brackets belong to one value
    key, values = parse_grid_option("model.args.channels=[8,16],[16,32]")
    assert values == [[8, 16], [16, 32]]
    assert split_values("a,{x: 1, y: 2},b") == ["a", "{x: 1, y: 2}", "b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.lrr=1e-3,3e-3", "did you mean 'train.lr'"),
        ("train.lr=abc,1e-3", "expected float"),
        ("train.lr", "expected KEY=V1,V2"),
        ("train.lr=1e-3,,3e-3", "empty value"),
        ("train.lr=1e-3,0.001", "twice"),
    ],
)
def test_bad_grid_options_fail_before_any_trial(text, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_grid_option(text)
    assert str(info.value).startswith("--grid")


def test_ranges_log_ranges_and_model_choices():
    assert expand_values("train.batch_size", {"range": [16, 64, 16]}, "f") == [16, 32, 48, 64]
    assert expand_values("train.lr", {"log": [1e-4, 1e-2], "num": 3}, "f") == [1e-4, 1e-3, 1e-2]
    assert expand_values("train.lr", {"log": [1e-3, 1e-2], "num": 3}, "f") == [
        0.001,
        0.00316,
        0.01,
    ]
    models = expand_values("model", ["simple_cnn", {"name": "inception_multibranch"}], "f")
    assert models == [
        {"model.name": "simple_cnn"},
        {"model.name": "inception_multibranch", "model.args": {}},
    ]
    with pytest.raises(UsageError, match="log"):
        expand_values("train.lr", {"log": [1e-2, 1e-4], "num": 3}, "f")
    with pytest.raises(UsageError, match="expected a list"):
        expand_values("train.lr", {"between": [1, 2]}, "f")
    for bad in ({"log": [1e-3, float("inf")], "num": 3}, {"range": [0, float("nan"), 1]}):
        with pytest.raises(UsageError, match="the ends must be finite numbers"):
            expand_values("train.lr", bad, "f")


def test_grid_is_every_combination_first_key_slowest():
    combos = grid({"train.lr": [1e-3, 3e-3], "model": [{"model.name": "a"}, {"model.name": "b"}]})
    assert combos == [
        {"train.lr": 1e-3, "model.name": "a"},
        {"train.lr": 1e-3, "model.name": "b"},
        {"train.lr": 3e-3, "model.name": "a"},
        {"train.lr": 3e-3, "model.name": "b"},
    ]


def test_sets_read_back_to_the_same_values():
    from cellbench.config import load_config

    params = {"train.lr": 0.003, "model.args": {"channels": [4, 8]}, "model.name": "simple_cnn"}
    config = load_config(overrides=to_sets(params))
    assert config.train.lr == 0.003
    assert config.model.args == {"channels": [4, 8]}
