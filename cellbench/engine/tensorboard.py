"""TensorBoard out: a run's scalars and hyperparameters as TensorBoard event files.

``train.tensorboard: true`` adds ``TensorBoardWriter`` to the trainer's callbacks: at each epoch's
end it writes every column of the epoch's history row (``train_loss``, ``val_loss``, each loss
term, each metric, ``lr``) as a scalar at step = epoch, under the column's own name, into
``<run>/tensorboard/``; at the start it writes the resolved config as hparams (metrics: the
history's metric columns). ``export_run`` writes the same from an existing run's ``history.csv``
and ``config.yaml`` (``cellbench runs export --tensorboard``), so old runs open in
``tensorboard --logdir`` too.

torch's ``SummaryWriter`` (it needs the ``tensorboard`` package, the optional extra
``cellbench[tensorboard]``) is imported only when a writer opens. One writer per run: under a
multi-process launch only rank 0 writes. A resumed run purges the steps after its checkpoint
(``purge_step``), so an epoch redone after a kill is not drawn twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cellbench.errors import UsageError

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
INSTALL_HINT = "pip install tensorboard (or cellbench[tensorboard])"


def require_tensorboard():
    """torch's ``SummaryWriter`` class; exit 2 naming the extra when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises ImportError naming tensorboard when it is missing
        raise UsageError(
            f"train.tensorboard / --tensorboard need the tensorboard package: {INSTALL_HINT}"
        ) from exc
    return SummaryWriter


def summary_writer(log_dir: Path, purge_step: int | None = None):
    return require_tensorboard()(log_dir=str(log_dir), purge_step=purge_step)


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``: the hparams plugin takes numbers, strings and booleans only."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:  # None, lists: their text, so every key still shows as a column
            out[name] = str(value)
    return out


def write_hparams(writer, config: dict[str, Any], metrics: list[str]) -> None:
    """The config as hparams of this run folder (not a sub-run, as ``add_hparams`` would make);
    the metric columns name the scalars TensorBoard's HPARAMS tab shows beside them."""
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(flat_hparams(config), dict.fromkeys(metrics, 0.0))
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)


def write_row(writer, row: dict[str, Any]) -> None:
    """One history row: every column but ``epoch`` at step = epoch (NaN kept: TensorBoard shows
    a diverged loss as such)."""
    epoch = int(row["epoch"])
    for key, value in row.items():
        if key == "epoch" or value is None:
            continue
        writer.add_scalar(key, float(value), global_step=epoch)


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((k, None) for k in row if k not in ("epoch", "lr"))
    return list(seen)


def is_rank_zero() -> bool:
    # torchrun sets RANK; a single-process run has none
    return int(os.environ.get("RANK", "0") or 0) == 0


class TensorBoardWriter:
    """The trainer callback of ``train.tensorboard`` (the hooks of ``trainer.Callback``)."""

    def __init__(self, run_dir: Path):
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None

    def on_train_start(self, trainer) -> None:
        if not is_rank_zero():
            return
        # purge what an interrupted attempt wrote after the checkpoint this one resumes from
        self.writer = summary_writer(self.log_dir, purge_step=trainer.start_epoch + 1)
        write_hparams(self.writer, trainer.config.to_dict(), trainer.metric_columns)
        self.writer.flush()

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        write_row(self.writer, row)
        self.writer.flush()  # the TUI and tensorboard read it while training goes on

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def export_run(run, out_dir: Path) -> tuple[Path, int]:
    """Write ``run``'s history and config to ``out_dir/<run folder>/``; returns (folder, rows)."""
    from cellbench.runs.history import read_history
    from cellbench.runs.summary import read_run_config

    rows = read_history(run.history)
    if not rows:
        from cellbench.errors import BadInputError

        raise BadInputError(f"{run.history}: no epoch finished yet, nothing to export")
    config, _ = read_run_config(run)
    target = Path(out_dir) / run.root.name
    # purge_step=1: an export run again replaces the previous one instead of doubling it
    writer = summary_writer(target, purge_step=1)
    try:
        write_hparams(writer, config, metric_columns(rows))
        for row in rows:
            write_row(writer, row)
    finally:
        writer.close()
    return target, len(rows)
