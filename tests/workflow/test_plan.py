"""The plan: which phases a change of one parameter reruns (exactly its dependents), resume,
--from/--only/--fresh, and gate thresholds that re-check without rerunning."""

from __future__ import annotations

from cellbench.workflow.plan import fingerprints, make_plan
from cellbench.workflow.spec import load_workflow

WORKFLOW = """
name: dag
params: {tiles: 4, organ_epochs: 2, epochs: 3, min_dice: 0.1}
phases:
  - {name: synth, command: "data synth --out raw --tiles ${tiles}"}
  - {name: extract, command: "features extract --data raw --backbone vit-demo"}
  - {name: organ, needs: [extract], command: "train --run organ --epochs ${organ_epochs}"}
  - name: decoder
    needs: [extract]
    command: "train --run dec --epochs ${epochs}"
    gates: [{name: np_dice, run: dec, key: best.metrics.val_np_dice, min: "${min_dice}"}]
  - {name: evaluate, needs: [decoder], command: "eval --run dec"}
  - {name: cleanup, needs: [organ, evaluate], command: "clean --features old"}
"""


def spec(tmp_path, *sets):
    path = tmp_path / "dag.yaml"
    path.write_text(WORKFLOW)
    return load_workflow(str(path), list(sets))


def done_state(s):
    fps = fingerprints(s)
    return {
        p.name: {"status": "done", "fingerprint": fps[p.name][0], "gates_fingerprint":
                 fps[p.name][1], "argv": p.argv, "last_duration_s": 10.0}
        for p in s.phases
    }  # fmt: skip


def actions(steps):
    return {s.phase.name: s.action for s in steps}


def test_a_new_workflow_runs_everything_and_a_finished_one_nothing(tmp_path):
    s = spec(tmp_path)
    assert set(actions(make_plan(s, {})).values()) == {"run", "clean"}
    assert set(actions(make_plan(s, done_state(s))).values()) == {"skip"}


def test_one_changed_value_reruns_exactly_the_phases_that_depend_on_it(tmp_path):
    state = done_state(spec(tmp_path))
    organ = make_plan(spec(tmp_path, "organ_epochs=5"), state)
    expected = {"synth": "skip", "extract": "skip", "organ": "run", "decoder": "skip",
                "evaluate": "skip", "cleanup": "clean"}  # fmt: skip
    assert actions(organ) == expected
    assert organ[2].why == "command changed: 2 -> 5"
    tiles = make_plan(spec(tmp_path, "tiles=8"), state)
    assert all(a in ("run", "clean") for a in actions(tiles).values())  # everything downstream
    assert tiles[1].why == "synth reruns"


def test_a_changed_threshold_checks_the_gate_again_without_rerunning(tmp_path):
    state = done_state(spec(tmp_path))
    plan = actions(make_plan(spec(tmp_path, "min_dice=0.9"), state))
    assert plan["decoder"] == "check" and plan["evaluate"] == "skip"


def test_an_interrupted_phase_resumes_and_from_only_fresh_choose_phases(tmp_path):
    s = spec(tmp_path)
    state = done_state(s)
    state["decoder"]["status"] = "interrupted"
    plan = actions(make_plan(s, state))
    assert plan["decoder"] == "resume" and plan["evaluate"] == "run" and plan["organ"] == "skip"
    assert actions(make_plan(s, done_state(s), from_phase="evaluate")) == {
        "synth": "skip", "extract": "skip", "organ": "skip", "decoder": "skip",
        "evaluate": "run", "cleanup": "clean"}  # fmt: skip
    only = actions(make_plan(s, done_state(s), only="organ"))
    assert [n for n, a in only.items() if a != "skip"] == ["organ"]
    assert set(actions(make_plan(s, done_state(s), fresh=True)).values()) == {"run", "clean"}


def test_a_changed_input_file_reruns_its_phase(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"1")
    text = WORKFLOW.replace(
        '{name: extract, command: "features extract --data raw --backbone vit-demo"}',
        f'{{name: extract, inputs: ["{weights}"], command: "features extract --data raw"}}',
    )
    path = tmp_path / "dag.yaml"
    path.write_text(text)
    s = load_workflow(str(path))
    state = done_state(s)
    weights.write_bytes(b"22")
    plan = actions(make_plan(load_workflow(str(path)), state))
    assert plan["synth"] == "skip" and plan["extract"] == "run" and plan["decoder"] == "run"
