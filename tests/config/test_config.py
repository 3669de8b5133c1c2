"""Config layering (defaults < profile < --set), typing, and each bad-config case."""

from __future__ import annotations

import pytest
import yaml

from cellbench.config import Config, config_from_dict, find_profile, list_profiles, load_config
from cellbench.errors import BadInputError, UsageError


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_have_the_documented_keys():
    config = Config()
    for key in (
        "task",
        "data.path",
        "model.name",
        "train.epochs",
        "train.lr",
        "train.batch_size",
        "train.weight_decay",
        "train.seed",
    ):
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node is not None


def test_layering_defaults_then_profile_then_set(tmp_path):
    profile = write(
        tmp_path / "p.yaml", {"train": {"lr": 0.01, "epochs": 7}, "model": {"name": "resnet18"}}
    )
    config = load_config(profile=str(profile), overrides=["train.lr=0.5", "train.batch_size=8"])
    assert config.train.lr == 0.5  # --set wins over the profile
    assert config.train.epochs == 7  # the profile wins over defaults
    assert config.train.batch_size == 8
    assert config.model.name == "resnet18"
    assert config.train.weight_decay == Config().train.weight_decay  # untouched default


def test_set_values_are_typed_from_the_field():
    config = load_config(
        overrides=[
            "train.epochs=3",
            "train.lr=1e-3",
            "train.amp=off",
            "train.ema=true",
            "model.name=123",
            "train.grad_clip=null",
            "data.mean=[0.5, 0.5, 0.5]",
            "model.args.branch_channels=[48, 72, 72]",
            "train.early_stopping.patience=4",
        ]
    )
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.lr == pytest.approx(1e-3) and isinstance(config.train.lr, float)
    assert config.train.ema is True
    assert config.model.name == "123"  # a str field keeps the raw text
    assert config.train.grad_clip is None
    assert config.data.mean == [0.5, 0.5, 0.5]
    assert config.model.args == {"branch_channels": [48, 72, 72]}
    assert config.train.early_stopping.patience == 4


def test_int_is_accepted_for_a_float_but_not_the_reverse():
    assert load_config(overrides=["train.lr=1"]).train.lr == 1.0
    with pytest.raises(UsageError, match=r"--set train.epochs=2.5: train.epochs: expected int"):
        load_config(overrides=["train.epochs=2.5"])


def test_mapping_fields_take_one_entry_or_a_whole_mapping(tmp_path):
    profile = write(tmp_path / "p.yaml", {"model": {"args": {"num_modules": 6}}})
    config = load_config(profile=str(profile), overrides=["model.args.branch_channels=[64,64,64]"])
    assert config.model.args == {"num_modules": 6, "branch_channels": [64, 64, 64]}
    # a whole mapping replaces the profile's: switching models leaves no stale arguments
    config = load_config(profile=str(profile), overrides=["model.args={channels: [8]}"])
    assert config.model.args == {"channels": [8]}
    nested = load_config(overrides=["data.families.mine=[Colon, Stomach]"])
    assert nested.data.families == {"mine": ["Colon", "Stomach"]}


def test_unknown_key_in_set_is_usage_error_with_did_you_mean():
    with pytest.raises(UsageError) as info:
        load_config(overrides=["train.lrr=0.1"])
    assert "--set train.lrr=0.1" in str(info.value)
    assert "did you mean 'train.lr'" in str(info.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    profile = write(tmp_path / "bad.yaml", {"train": {"epoch": 3}})
    with pytest.raises(BadInputError) as info:
        load_config(profile=str(profile))
    message = str(info.value)
    assert str(profile) in message and "train.epoch" in message and "train.epochs" in message
    assert "\n" not in message


def test_wrong_type_in_file(tmp_path):
    profile = write(tmp_path / "bad.yaml", {"train": {"batch_size": "big"}})
    with pytest.raises(BadInputError, match=r"bad.yaml: .*train.batch_size.*expected int"):
        load_config(profile=str(profile))


def test_bad_choice_in_set():
    with pytest.raises(UsageError, match="train.amp.*not one of auto, off, bf16, fp16"):
        load_config(overrides=["train.amp=fp8"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    profile = write(tmp_path / "broken.yaml", "train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(BadInputError) as info:
        load_config(profile=str(profile))
    assert "broken.yaml: malformed YAML at line" in str(info.value)


def test_non_mapping_yaml(tmp_path):
    profile = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(BadInputError, match="expected a mapping"):
        load_config(profile=str(profile))


def test_set_without_equals_and_unknown_profile():
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        load_config(overrides=["train.lr"])
    with pytest.raises(UsageError, match="unknown profile 'nope'"):
        find_profile("nope")


def test_shipped_profiles_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = list_profiles()
    assert names, "the package ships profiles"
    for name in names:
        assert find_profile(name).is_file()
        load_config(profile=name)


def test_saved_config_reloads_identically(tmp_path):
    config = load_config(
        overrides=["train.lr=0.02", "model.args.num_modules=4", "expect.accuracy=[0.5, 1]"]
    )
    path = config.save(tmp_path / "config.yaml")
    again = load_config(config_file=path)
    assert again == config
    assert again.hash() == config.hash()
    assert config_from_dict(config.to_dict()) == config


def test_text_fields_keep_what_was_typed_on_the_command_line():
    config = load_config(overrides=["model.weights=001", "data.family=on", "data.classes=[0, 1]"])
    assert config.model.weights == "001"
    assert config.data.family == "on"
    assert config.data.classes == ["0", "1"]
    assert load_config(overrides=["model.weights=null"]).model.weights is None


def test_bad_choice_gets_a_did_you_mean_and_split_is_checked():
    with pytest.raises(
        UsageError, match="'clasify' is not one of .* \\(did you mean 'classify'\\?\\)"
    ):
        load_config(overrides=["task=clasify"])
    with pytest.raises(UsageError, match="data.split: '7' is not one of 1, 2, 3"):
        load_config(overrides=["data.split=7"])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.epochs=0", "train.epochs: 0 must be >= 1"),
        ("train.epochs=-1", "train.epochs: -1 must be >= 1"),
        ("train.batch_size=0", "train.batch_size: 0 must be >= 1"),
        ("train.lr=-0.1", "train.lr: -0.1 must be >= 0"),
        ("train.lr=.inf", "train.lr: inf must be >= 0"),
        ("train.lr=.nan", "train.lr: nan must be >= 0"),
        ("data.val_ratio=1", "data.val_ratio: 1.0 must be in [0, 1)"),
        ("data.test_ratio=-0.1", "data.test_ratio: -0.1 must be in [0, 1)"),
        ("data.num_workers=-1", "data.num_workers: -1 must be >= 0"),
        ("data.image_size=0", "data.image_size: 0 must be >= 1"),
        ("train.log_every=0", "train.log_every: 0 must be >= 1"),
        ("train.grad_clip=0", "train.grad_clip: 0.0 must be > 0"),
        ("data.hflip=1.5", "data.hflip: 1.5 must be in [0, 1]"),
        ("train.limit_train_batches=0", "train.limit_train_batches: 0 must be >= 1"),
        ("train.grad_accum_steps=0", "train.grad_accum_steps: 0 must be >= 1"),
        ("nuclei.widths=[64, 0]", "nuclei.widths[1]: 0 must be >= 1"),
        ("nuclei.loss.hv_mse=-1", "nuclei.loss.hv_mse: -1.0 must be >= 0"),
    ],
)
def test_out_of_range_values_on_the_command_line_exit_2_naming_the_key(setting, message):
    with pytest.raises(UsageError) as caught:
        load_config(overrides=[setting])
    assert str(caught.value) == f"--set {setting}: {message}"


def test_out_of_range_value_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path / "p.yaml", {"train": {"batch_size": 0}})
    with pytest.raises(BadInputError, match=r"p\.yaml: train\.batch_size: 0 must be >= 1"):
        load_config(profile=str(path))


def test_rules_between_fields_name_the_layer_that_broke_them(tmp_path):
    with pytest.raises(UsageError, match=r"--set data.val_ratio=0.9: .*leaves no training data"):
        load_config(overrides=["data.val_ratio=0.9"])  # + the default test_ratio 0.15
    # a later --set may complete an earlier one: checked once every layer is applied
    config = load_config(overrides=["data.in_chans=1", "data.mean=[0.5]", "data.std=[0.25]"])
    assert config.data.in_chans == 1
    with pytest.raises(UsageError, match=r"--set data.in_chans=1: data.mean: 3 values"):
        load_config(overrides=["data.in_chans=1"])
    path = write(tmp_path / "p.yaml", {"checks": {"input_min": 5.0, "input_max": 1.0}})
    with pytest.raises(BadInputError, match=r"p\.yaml: checks.input_min = 5 must be < "):
        load_config(profile=str(path))
    with pytest.raises(UsageError, match=r"expect.val_accuracy: expected \[low, high\]"):
        load_config(overrides=["expect={val_accuracy: [0.9, 0.1]}"])


def test_duplicate_keys_are_refused_naming_file_key_and_line(tmp_path):
    path = write(tmp_path / "dup.yaml", "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n")
    with pytest.raises(BadInputError) as caught:
        load_config(profile=str(path))
    assert str(caught.value) == (
        f"{path}: malformed YAML at line 4, column 3: duplicate key 'epochs'"
    )


def test_a_profile_that_is_not_utf8_is_one_line_exit_3(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  optimizer: 'sgd'  # réglé\n".encode("latin-1"))
    with pytest.raises(BadInputError, match=r"latin1\.yaml: not UTF-8 text \(byte 30\)"):
        load_config(profile=str(path))


def test_cli_exit_codes_for_bad_values(tmp_path):
    from typer.testing import CliRunner

    from cellbench.cli.app import app

    runner = CliRunner()
    bad_set = runner.invoke(app, ["train", "--set", "train.epochs=0", "--runs-dir", str(tmp_path)])
    assert bad_set.exit_code == 2 and "train.epochs: 0 must be >= 1" in bad_set.output
    assert "Traceback" not in bad_set.output
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\n")
    bad_file = runner.invoke(app, ["train", "-p", str(path), "--runs-dir", str(tmp_path)])
    assert bad_file.exit_code == 3 and "not UTF-8" in bad_file.output
