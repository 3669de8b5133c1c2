"""``train --nproc``: torchrun's command line, the exit status, the relaunched arguments."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cellbench.engine.launch import failure_code, torchrun_arguments


def test_torchrun_parses_cellbench_options_as_the_module_arguments():
    from torch.distributed.run import get_args_parser

    argv = ["train", "--run", "r", "--set", "train.lr=1e-3", "--resume"]
    args = get_args_parser().parse_args(torchrun_arguments(2, argv))
    # without the "--" torchrun's parser takes --run for its own --run-path
    assert args.module and args.training_script == "cellbench"
    assert args.training_script_args == argv and args.nproc_per_node == "2"
    assert args.standalone


def test_the_exit_status_is_the_failure_that_stopped_the_others():
    fail = lambda code: SimpleNamespace(exitcode=code)  # noqa: E731
    assert failure_code({0: fail(4), 1: fail(4)}) == 4
    assert failure_code({0: fail(3), 1: fail(4)}) == 3  # rank 0 speaks for the run
    assert failure_code({1: fail(-9)}) == 137  # SIGKILL, as a shell says it
    # rank 1 refused and exited; torchrun then stopped rank 0 with SIGTERM (the CI failure)
    assert failure_code({0: fail(-15), 1: fail(4)}) == 4
    assert failure_code({0: fail(-9), 1: fail(1)}) == 137  # OOM-killed rank 0 broke rank 1
    assert failure_code({0: fail(-15), 1: fail(-15)}) == 143  # only terminations: stopped


def test_the_relaunched_command_line_is_the_parsed_options_without_nproc(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cellbench.engine.launch as launch
    from cellbench.cli.app import app

    seen = {}

    def fake_launch(nproc, argv):  # stands in for torchrun: records what each worker would get
        seen.update(nproc=nproc, argv=argv)
        return 0

    monkeypatch.setattr(launch, "launch", fake_launch)
    result = CliRunner().invoke(
        app,
        ["train", "--nproc", "2", "--run", "r", "-s", "train.lr=0.1", "-s", "train.epochs=2",
         "--resume", "--runs-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["nproc"] == 2
    argv = seen["argv"]
    assert argv[0] == "train" and "--nproc" not in argv
    assert argv[argv.index("--run") + 1] == "r" and "--resume" in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == [
        "train.lr=0.1",
        "train.epochs=2",
    ]


def test_nproc_refuses_the_one_process_checks():
    from typer.testing import CliRunner

    from cellbench.cli.app import app

    result = CliRunner().invoke(app, ["train", "--nproc", "2", "--lr-find"])
    assert result.exit_code == 2 and "one process" in result.output


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}])
def test_under_torchrun_nproc_is_refused(monkeypatch, env):
    from cellbench.engine.launch import check_nproc
    from cellbench.errors import UsageError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError, match="already running under torchrun"):
        check_nproc(2)
