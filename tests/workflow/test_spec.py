"""Workflow files: parameters, --set, needs, gates; every problem is one line naming the file
and the key (exit 3 for the file, 2 for --set)."""

from __future__ import annotations

import pytest

from cellbench.errors import BadInputError, UsageError
from cellbench.workflow.spec import load_workflow, shipped_workflows

GOOD = """
name: tiny
params: {data: d, tiles: 4, min_std: 0.5}
phases:
  - name: synth
    command: data synth --out ${data}/raw --tiles ${tiles}
  - name: check
    command: features check ${data}/f
    json: true
    gates:
      - {name: cls_std, output: true, key: folds.*.cls_std, min: "${min_std}", max: 1.5,
         diagnosis: "the final norm is missing"}
"""


def write(tmp_path, text: str):
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


def test_parameters_are_substituted_and_set_overrides_them(tmp_path):
    spec = load_workflow(str(write(tmp_path, GOOD)), ["tiles=9", "min_std=0.7"])
    synth, check = spec.phases
    assert synth.argv == ["data", "synth", "--out", "d/raw", "--tiles", "9"]
    assert check.needs == ["synth"]  # default: the phase before
    gate = check.gates[0]
    assert (gate.min, gate.max, gate.expected()) == (0.7, 1.5, "0.7 .. 1.5")


def test_an_unknown_set_parameter_exits_2_with_a_suggestion(tmp_path):
    with pytest.raises(UsageError, match=r"no parameter 'tile'.*did you mean 'tiles'"):
        load_workflow(str(write(tmp_path, GOOD)), ["tile=3"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("command: data synth", "comand: data synth"), r"phases\[0\]: unknown key 'comand'"),
        (("${tiles}", "${tyles}"), r"phase synth: command: unknown parameter \$\{tyles\}"),
        (("key: folds.*.cls_std, ", ""), r"gate cls_std: key"),
        (("output: true, ", ""), r"gate cls_std: say where the value is read"),
        (("    json: true\n", ""), r"gate cls_std: output: true needs json: true"),
        (('min: "${min_std}", max: 1.5,', ""), r"gate cls_std: give min, max or equals"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(BadInputError, match=message) as info:
        load_workflow(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_needs_must_name_an_earlier_phase(tmp_path):
    text = GOOD.replace("    json: true\n", "    json: true\n    needs: [later]\n")
    with pytest.raises(BadInputError, match="needs: 'later' is not an earlier phase"):
        load_workflow(str(write(tmp_path, text)))


def test_shipped_workflows_load_and_name_their_phases():
    assert {"demo", "cellvit-optimus"} <= set(shipped_workflows())
    demo = load_workflow("demo")
    assert demo.names()[:5] == ["synth", "prepare", "check", "extract", "features-check"]
    optimus = load_workflow("cellvit-optimus", ["pannuke=/data/PanNuke", "weights=/w.bin"])
    families = optimus.phase("families")
    assert families.is_sweep and {g.name for g in families.gates} >= {"np_dice", "hv_mse"}
    diagnoses = " ".join(g.diagnosis for p in optimus.phases for g in p.gates)
    assert "CLS std 0.28: the final norm is missing" in diagnoses
    assert "HV MSE in the thousands: HV stored as int8" in diagnoses


def test_a_missing_workflow_lists_the_shipped_ones():
    with pytest.raises(BadInputError, match="did you mean 'demo'.*shipped: "):
        load_workflow("demoo")


@pytest.mark.parametrize("bound", [".nan", ".inf", "-.inf"])
def test_a_threshold_that_is_not_finite_names_the_file_phase_and_gate(tmp_path, bound):
    path = write(tmp_path, GOOD.replace('min: "${min_std}"', f"min: {bound}"))
    with pytest.raises(BadInputError) as info:
        load_workflow(str(path))
    assert str(info.value) == f"{path}: phase check: gate cls_std: min: not a finite number"


def test_scientific_notation_is_a_number_in_the_file_and_in_set(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string: still a threshold."""
    in_file = write(tmp_path, GOOD.replace("max: 1.5", "max: 1e-3"))
    assert load_workflow(str(in_file)).phases[1].gates[0].max == 0.001
    spec = load_workflow(str(write(tmp_path, GOOD)), ["min_std=1e-3"])
    assert spec.phases[1].gates[0].min == 0.001


@pytest.mark.parametrize("value", ["abc", ".nan", "["])
def test_a_bad_threshold_from_set_exits_2_naming_set_not_the_file(tmp_path, value):
    path = write(tmp_path, GOOD)
    with pytest.raises(UsageError, match=r"^--set min_std=.*: phase check: gate cls_std: min: "):
        load_workflow(str(path), [f"min_std={value}"])
    with pytest.raises(UsageError) as info:
        load_workflow("demo", [f"min_np_dice={value}"])
    assert "demo.yaml" not in str(info.value) and "--set min_np_dice" in str(info.value)


def test_a_nul_byte_in_a_value_is_refused_before_anything_runs(tmp_path):
    path = write(tmp_path, GOOD.replace("data: d,", 'data: "a\\0b",'))
    with pytest.raises(BadInputError) as info:
        load_workflow(str(path))
    assert str(info.value) == f"{path}: params.data: holds a NUL byte"
    with pytest.raises(UsageError, match=r"--set data=\.\.\.: a value cannot hold a NUL byte"):
        load_workflow(str(write(tmp_path, GOOD)), ["data=a\0b"])
