"""The root ``cellbench`` command: sub-apps, --version, and error-to-exit-code mapping.

No torch/timm import happens here or in any cli module at import time: ``cellbench --help``
must stay fast. Commands import the heavy core inside their bodies.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from cellbench import __version__
from cellbench.cli import data as data_cli
from cellbench.cli import eval as eval_cli
from cellbench.cli import features as features_cli
from cellbench.cli import runs as runs_cli
from cellbench.cli import workflow as workflow_cli
from cellbench.cli import workspace as workspace_cli
from cellbench.cli.clean import clean as clean_command
from cellbench.cli.common import err_console
from cellbench.cli.predict import predict_command
from cellbench.cli.quickstart import quickstart_command
from cellbench.cli.status import status_command
from cellbench.cli.sweep import sweep_command
from cellbench.cli.train import train_command
from cellbench.cli.tui import tui_command
from cellbench.errors import CellbenchError, ExitCode
from cellbench.signals import Terminated, exit_code, graceful_signals


def _hide_flag_types() -> None:
    """Typer >= 0.25 prints ``<bool>`` beside every on/off flag (``--json <bool>``), as if it took
    a value: the help shows no type for flags. One patch here instead of a ``metavar`` on each."""
    from typer.core import TyperOption

    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "_cellbench", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else show(self, ctx)

    display_type_rich._cellbench = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


# how long another rank waits for torchrun to stop it once rank 0 has the error to say
RANK_0_EXIT_WAIT_S = 60.0


def leave_the_exit_to_rank_0() -> None:
    """Under torchrun every rank meets the same error (a refusal rank 0 took and broadcast, a bad
    --set every rank read): rank 0 says it and exits with its code. Were another rank to exit
    first, torchrun would stop rank 0 with SIGTERM, maybe before its message was out. So the
    other ranks wait, silent, for torchrun to end them once rank 0 has exited (SIGTERM: the
    launcher then reports rank 0's code, ``engine.launch.failure_code``). A rank still alive
    after ``RANK_0_EXIT_WAIT_S`` met an error rank 0 did not, and says it itself. RANK is read
    from the environment, not via engine.distributed, which imports torch: a refusal stays a
    fast, small exit (a 10⁶-trial sweep is refused in < 1 s, < 200 MB)."""
    import time

    time.sleep(RANK_0_EXIT_WAIT_S)


class CellbenchGroup(TyperGroup):
    """Turns cellbench errors into one stderr line and the documented exit code.

    SIGTERM and SIGHUP take Ctrl-C's path in every command (``cellbench.signals``): the command's
    cleanups run, and the exit code is 128 + the signal (143, 129; Ctrl-C 130).
    """

    def invoke(self, ctx):
        try:
            with graceful_signals():
                return super().invoke(ctx)
        except Terminated as exc:
            err_console.print(f"[yellow]stopped by {exc.name}[/]")
            raise typer.Exit(exit_code(exc.signum)) from None
        except CellbenchError as exc:
            rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
            if rank != "0":
                leave_the_exit_to_rank_0()  # returns only when rank 0 never exited
                _print_error(f"rank {rank}: {exc}")
            else:
                _print_error(str(exc))
            raise typer.Exit(int(exc.exit_code)) from None
        except OSError as exc:
            # a file system refusal we did not foresee (a file where a folder was expected, a full
            # disk, no permission): still one line naming the file, as bad input
            where = f"{exc.filename}: " if exc.filename else ""
            _print_error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    name="cellbench",
    cls=CellbenchGroup,
    help="Train, check and retrain image models from the terminal: PanNuke nuclei workflows "
    "and disciplined image classification.",
    epilog="Exit codes: 0 ok · 1 a check failed · 2 bad usage · 3 bad input data/file · "
    "4 run conflict (exists, locked) · 130 interrupted (143 SIGTERM, 129 SIGHUP).",
    rich_markup_mode="rich",
    invoke_without_command=True,  # a bare `cellbench` shows `cellbench status`
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cellbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """cellbench: train, check and retrain image models from the terminal.

    With no command: where am I (cellbench status); cellbench --help lists the commands.
    """
    if ctx.invoked_subcommand is None:
        status_command(json_out=False)
        err_console.print("[dim]commands: cellbench --help[/]")


app.command("quickstart", rich_help_panel="Start here")(quickstart_command)
app.command("init", rich_help_panel="Start here")(workspace_cli.init_command)
app.command("status", rich_help_panel="Start here")(status_command)
app.add_typer(workspace_cli.app, name="config", rich_help_panel="Start here")
app.add_typer(runs_cli.app, name="runs", rich_help_panel="Runs")
app.add_typer(data_cli.app, name="data", rich_help_panel="Data")
app.add_typer(features_cli.app, name="features", rich_help_panel="Data")
app.command("train", rich_help_panel="Train")(train_command)
app.command("sweep", rich_help_panel="Train")(sweep_command)
app.add_typer(workflow_cli.app, name="workflow", rich_help_panel="Train")
app.add_typer(eval_cli.app, name="eval", rich_help_panel="Models")
app.command("predict", rich_help_panel="Models")(predict_command)
app.command("clean", rich_help_panel="Runs")(clean_command)
app.command("tui", rich_help_panel="Runs")(tui_command)


def main() -> None:
    app()
