"""One grammar for list options: space- and comma-separated values mean the same in every
command (``--folds 1 2 3`` was refused by ``features extract`` while ``data prepare`` took it)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.cli.lists import expand_list_options, parse_folds, split_values
from cellbench.errors import UsageError

runner = CliRunner()
# repeatable options whose every value is one ``KEY=VALUE`` item (values may hold commas)
KEY_VALUE_OPTIONS = {"--set", "--grid"}


def test_expand_and_split_give_the_same_items_for_every_form():
    names = ["--folds"]
    forms = (["--folds", "1", "2", "3"], ["--folds", "1,2,3"], ["--folds=1,2", "3"])
    forms += (["--folds", "1", "--folds", "2,3"], ["--folds", "1, 2", "3"])
    for form in forms:
        args = expand_list_options([*form, "--json"], names)
        assert args[-1] == "--json"
        values = [args[i + 1] for i, a in enumerate(args) if a == "--folds"]
        assert parse_folds(values) == [1, 2, 3], form
    # "--" ends the list: what follows is positional
    assert expand_list_options(["-m", "a", "--", "r1"], ["-m"]) == ["-m", "a", "--", "r1"]
    assert expand_list_options(["--folds"], ["--folds"]) == ["--folds"]  # Click: needs a value
    assert split_values(None) == [] and parse_folds([]) is None
    with pytest.raises(UsageError, match="--folds: 'x' is not a fold number"):
        parse_folds(["1 x"])


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            yield from _commands(command, (*prefix, name))
        yield (*prefix, name), command


def test_every_list_option_of_the_cli_takes_the_one_grammar():
    root = typer.main.get_command(app)
    seen = set()
    for path, command in _commands(root):
        declared = getattr(command, "list_option_names", frozenset())
        for param in command.params:
            if param.param_type_name != "option" or not param.multiple:
                continue
            if set(param.opts) & KEY_VALUE_OPTIONS:
                continue
            assert set(param.opts) <= declared, f"cellbench {' '.join(path)} {param.opts[0]}"
            seen.add((" ".join(path), param.opts[0]))
    assert {("features extract", "--folds"), ("features extract", "--blocks")} <= seen
    assert {("data prepare", "--folds"), ("eval pannuke", "--folds")} <= seen
    assert ("runs compare", "--metric") in seen


def _extract(store, profile, *extra):
    args = ["features", "extract", "--data", str(store), "--backbone", str(profile)]
    return runner.invoke(app, [*args, "--device", "cpu", "--json", *extra])


def test_features_extract_takes_folds_and_blocks_in_both_forms(fx_store, tiny_vit):
    spaced = _extract(fx_store, tiny_vit, "--folds", "1", "2", "--blocks", "1", "2", "--tag", "a")
    assert spaced.exit_code == 0, spaced.output
    commas = _extract(fx_store, tiny_vit, "--folds", "1,2", "--blocks", "1,2", "--tag", "b")
    assert commas.exit_code == 0, commas.output
    for result in (spaced, commas):
        assert [f["fold"] for f in json.loads(result.stdout)["folds"]] == [1, 2]
    for tag in ("a", "b"):
        manifest = json.loads((fx_store / "features" / tag / "manifest.json").read_text())
        assert manifest["blocks"] == [1, 2]
    bad = _extract(fx_store, tiny_vit, "--folds", "1", "two")
    assert bad.exit_code == 2 and "--folds: 'two'" in bad.output


def test_data_prepare_takes_both_forms(tmp_path):
    raw = tmp_path / "raw"
    synth = ["data", "synth", "--out", str(raw), "--kind", "pannuke", "--folds", "3"]
    assert runner.invoke(app, [*synth, "--tiles", "2", "--size", "16"]).exit_code == 0
    for name, folds in (("a", ["1", "3"]), ("b", ["1,3"])):
        args = ["data", "prepare", "--pannuke", str(raw), "--out", str(tmp_path / name)]
        result = runner.invoke(app, [*args, "--folds", *folds, "--json"])
        assert result.exit_code == 0, result.output
        assert [f["fold"] for f in json.loads(result.stdout)["folds"]] == [1, 3]


def test_runs_compare_metrics_in_both_forms_after_the_runs(tmp_path):
    from cellbench.runs.store import RunStore
    from tests.runs.test_compare import make_run

    store = RunStore(tmp_path)
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5}
    for name in ("a", "b"):
        make_run(store, name, [row])
    base = ["runs", "compare", "1", "2", "--json", "--runs-dir", str(tmp_path)]
    spaced = runner.invoke(app, [*base, "-m", "val_loss", "train_loss"])
    commas = runner.invoke(app, [*base, "--metric", "val_loss,train_loss"])
    for result in (spaced, commas):
        assert result.exit_code == 0, result.output
        records = json.loads(result.stdout)
        assert [sorted(r["metrics"]) for r in records] == [["train_loss", "val_loss"]] * 2
