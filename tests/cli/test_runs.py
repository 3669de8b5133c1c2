"""``cellbench runs list/show/compare`` with one damaged run: the others answer as before, the
damaged one is flagged on one stderr line and shown from what is readable; exit code 0."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cellbench.cli.app import app
from cellbench.config import Config
from cellbench.engine.history import History
from cellbench.runs.events import EventWriter
from cellbench.runs.store import RunStore

runner = CliRunner()
FILES = ("events.jsonl", "history.csv", "config.yaml")


def make_run(store: RunStore, name: str, epochs: int = 3):
    """A finished run written with the real writers (no training needed)."""
    run = store.create(name)
    Config().save(run.config)
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.5 / e, "val_accuracy": e / 4, "lr": 0.1}
        for e in range(1, epochs + 1)
    ]
    History(run.history, rows).write()
    with EventWriter(run.events) as w:
        w.emit("run_start", task="classify", model="simple_cnn", resumed=False)
        for row in rows:
            best = {"metric": "val_loss", "value": row["val_loss"], "epoch": row["epoch"]}
            w.emit("step", epoch=row["epoch"], step=row["epoch"] * 2, loss=row["train_loss"])
            w.emit("epoch", epoch=row["epoch"], train_loss=row["train_loss"],
                   val_loss=row["val_loss"], metrics={"val_accuracy": row["val_accuracy"]},
                   lr=0.1, best=best, time_s=0.1)  # fmt: skip
            w.emit("memory", device="cpu", allocated=None, reserved=None, peak=None, rss=10**8)
        w.emit("warning", check="initial_loss", severity="warning", message="far from ln(C)")
        w.emit("run_end", status="completed", reason="3 epochs", best=best)
    return run


def invoke(root, *args):
    result = runner.invoke(app, ["runs", *args, "--runs-dir", str(root)])
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def damage_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "damaged" in line]


def check_commands(root, before: dict[str, dict]) -> None:
    """Every command answers; the good runs exactly as before; the victim flagged once."""
    listed = invoke(root, "list", "--json")
    assert listed.exit_code == 0
    summaries = {s["name"]: s for s in json.loads(listed.stdout)}
    for name in ("first", "last"):
        assert summaries[name] == before[name]
    victim = summaries["victim"]
    expected = [f"warning: 0002-victim damaged: {'; '.join(victim['damaged'])}"]
    assert damage_lines(listed) == (expected if victim["damaged"] else [])

    table = invoke(root, "list")
    assert table.exit_code == 0 and damage_lines(table) == damage_lines(listed)
    assert ("damaged" in table.stdout) == bool(victim["damaged"])

    shown = invoke(root, "show", "victim", "--json")
    assert shown.exit_code == 0 and damage_lines(shown) == damage_lines(listed)
    assert json.loads(shown.stdout)["damaged"] == victim["damaged"]
    assert invoke(root, "show", "victim").exit_code == 0
    other = invoke(root, "show", "first", "--json")
    assert other.exit_code == 0 and damage_lines(other) == []

    compared = invoke(root, "compare", "first", "victim", "last", "--json")
    assert compared.exit_code == 0, compared.output
    records = {r["name"]: r for r in json.loads(compared.stdout)}
    assert records["first"]["metrics"]["val_loss"]["best"] == 0.5
    assert records["victim"]["damaged"] == victim["damaged"]
    assert damage_lines(compared) == damage_lines(listed)
    assert invoke(root, "compare", "first", "victim", "last").exit_code == 0


def fresh_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    for name in ("first", "victim", "last"):
        make_run(store, name)
    before = {s["name"]: s for s in json.loads(invoke(root, "list", "--json").stdout)}
    assert all(not s["damaged"] for s in before.values())
    return root, store.resolve("victim"), before


# ----------------------------------------------------------------------------- named cases


def test_the_cases_of_the_issue_flag_the_run_and_leave_the_others(tmp_path_factory):
    root, victim, before = fresh_store(tmp_path_factory)
    with open(victim.events, "a") as fh:
        fh.write('{"kind":"epoch","epoch":"x"}\n{"kind":"epoch","time":1e400,"epoch":4}\n')
        fh.write('{"kind":"epoch","epoch":null}\n[1, 2]\n')
    with open(victim.history, "ab") as fh:
        fh.write(b"4,abc,0.1,0.2,0.1\n\x00\xffbinary\n")
    victim.config.write_bytes(b"train: [\xff\n")
    check_commands(root, before)
    (summary,) = [s for s in json.loads(invoke(root, "list", "--json").stdout) if s["damaged"]]
    assert summary["damaged"] == [
        "events.jsonl: 4 bad lines skipped (line 13: epoch event: epoch: expected an integer "
        ">= 1, got 'x')",
        "history.csv: 2 bad rows skipped (line 5: train_loss: not a number: 'abc')",
        "config.yaml: not UTF-8 text (byte 8)",
    ]
    # what is readable is still shown: 3 epochs, completed, its best
    assert (summary["status"], summary["epochs"], summary["best_value"]) == ("completed", 3, 0.5)


def test_a_config_with_wrong_types_marks_the_run_damaged(tmp_path_factory):
    root, victim, before = fresh_store(tmp_path_factory)
    victim.config.write_text("task: classify\nmodel: just-a-string\ntrain:\n  epochs: 0\n")
    check_commands(root, before)
    (summary,) = [s for s in json.loads(invoke(root, "list", "--json").stdout) if s["damaged"]]
    assert summary["damaged"] == ["config.yaml: model: expected a mapping, got 'just-a-string'"]


# ----------------------------------------------------------------------------- property


def json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                    max_size=3),
        max_leaves=6,
    )  # fmt: skip


@st.composite
def corruptions(draw):
    """A corruption of one file, drawn as data only (positions as fractions of the file, which
    has timestamps and so varies in length): truncation, byte flips, random bytes, a field of a
    line given a random JSON value, a random JSON line."""
    return {
        "file": draw(st.sampled_from(FILES)),
        "how": draw(st.sampled_from(["truncate", "flip", "random_bytes", "wrong_type", "line"])),
        "at": draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=2, max_size=5)),
        "bits": draw(st.integers(0, 7)),
        "bytes": draw(st.binary(min_size=1, max_size=40)),
        "value": draw(json_values()),
    }


def corrupt(data: bytes, c: dict) -> bytes:
    def index(fraction: float, n: int) -> int:
        return int(fraction * n)

    at = c["at"]
    if not data:
        return c["bytes"]
    if c["how"] == "truncate":
        return data[: index(at[0], len(data))]
    if c["how"] == "flip":
        out = bytearray(data)
        for fraction in at:
            out[index(fraction, len(out))] ^= 1 << c["bits"]
        return bytes(out)
    if c["how"] == "random_bytes":
        i = index(at[0], len(data) + 1)
        return data[:i] + c["bytes"] + data[i:]
    lines = data.split(b"\n")
    i = index(at[0], len(lines) - 1)  # the last "line" is the empty one after the final \n
    value = json.dumps(c["value"]).encode()
    if c["how"] == "line":
        lines.insert(i, value)
    elif c["file"] == "events.jsonl":
        try:
            event = dict(json.loads(lines[i]))
        except ValueError:  # an earlier corruption broke this line: one more line instead
            event = {"kind": "epoch"}
        keys = sorted(event)
        event[keys[index(at[1], len(keys))]] = c["value"]
        lines[i] = json.dumps(event).encode()
    elif c["file"] == "history.csv":
        cells = lines[i].split(b",")
        cells[index(at[1], len(cells))] = value
        lines[i] = b",".join(cells)
    else:  # config.yaml: a key's value replaced by a random one
        key = lines[i].partition(b":")[0]
        lines[i] = key + b": " + value
    return b"\n".join(lines)


STORE: dict = {}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(damage=st.lists(corruptions(), min_size=1, max_size=3))
def test_any_corruption_of_one_run_leaves_the_others_answering(tmp_path_factory, damage):
    # one store for every example (each restores the victim's files first): examples stay cheap
    if not STORE:
        root, victim, before = fresh_store(tmp_path_factory)
        pristine = {name: (victim.root / name).read_bytes() for name in FILES}
        STORE.update(root=root, victim=victim, before=before, pristine=pristine)
    root, victim, before = STORE["root"], STORE["victim"], STORE["before"]
    for name, data in STORE["pristine"].items():
        (victim.root / name).write_bytes(data)
    for c in damage:
        path = victim.root / c["file"]
        path.write_bytes(corrupt(path.read_bytes(), c))
    check_commands(root, before)


def test_damage_lines_are_one_line_per_run(tmp_path_factory):
    root, victim, before = fresh_store(tmp_path_factory)
    victim.events.write_bytes(victim.events.read_bytes() + b"\x00" * 300 + b"\n")
    result = invoke(root, "list")
    (line,) = damage_lines(result)
    assert re.fullmatch(r"warning: 0002-victim damaged: events\.jsonl: 1 bad line skipped .*", line)


def test_runs_list_fits_80_columns_without_folding_names(tmp_path, monkeypatch):
    """Long trial names stay whole at 80 columns: started/duration/task go first; one shared
    monitored metric is named once, in the header."""
    from tests.tui.screens import write_run

    store = RunStore(tmp_path)
    names = ["baseline", "demo-grid-t003-lr3e-3-bs32-s1", "nuclei-vit-small-fold1"]
    for name in names:
        write_run(store, name, epochs=4, planned=20)
    from cellbench.cli.common import console

    monkeypatch.setattr(console, "width", 80)  # the tests' console is created 200 wide
    result = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()[1:]  # under the title (the runs folder's path)
    assert max(len(line.rstrip()) for line in lines) <= 80, result.stdout
    for name in names:
        assert any(f" {name} " in line for line in lines), name
    assert "best val_loss" in result.stdout
    monkeypatch.setattr(console, "width", 160)
    wide = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path)])
    assert "started" in wide.stdout and "duration" in wide.stdout


def test_help_shows_no_bool_metavar_for_flags():
    for command in (["runs", "stop"], ["train"], ["tui"], ["runs", "list"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0
        assert "--help" in result.stdout and "<bool>" not in result.stdout, command
