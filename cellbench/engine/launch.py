"""``cellbench train --nproc N``: the same command again under torchrun, N processes here.

This process becomes torchrun's agent (``torch.distributed.run``, run in-process so its outcome
is a Python value, not a log): it starts N workers of ``python -m cellbench <the same arguments,
without --nproc>`` on this machine (``--standalone``: a local rendezvous on a free port); each
worker sees torchrun's ``RANK``/``WORLD_SIZE`` and joins the process group
(``cellbench.engine.distributed``), so a worker never launches again. Several machines use
``torchrun`` itself with the same ``-m cellbench train ...`` (docs/scale.md).

Exit status: the workers print their own one-line errors; the launcher exits with the code of the
rank whose failure stopped the others (4 when the run exists or is locked, 130/143 when
interrupted, ...; see ``failure_code``), or 128 + the signal that stopped the agent. A Ctrl-C
reaches the workers from the terminal and again from torchrun; the trainer treats the pair as one
stop. Workers that do not end within ``SHUTDOWN_TIMEOUT_S`` of a stop are killed (their
checkpoints are atomic either way).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from cellbench.errors import UsageError

SHUTDOWN_TIMEOUT_S = 120


def torchrun_arguments(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun's command line for ``python -m cellbench <argv>`` in ``nproc`` local processes."""
    return [
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
        "--module",
        "--",  # cellbench's options after it: torchrun's parser would read --run as --run-path
        "cellbench",
        *argv,
    ]


def check_nproc(nproc: int) -> None:
    """N processes need N GPUs when the machine has CUDA (one process per GPU, NCCL)."""
    from cellbench.engine.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise UsageError("--nproc: already running under torchrun (it started the processes)")
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UsageError(
            f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s); one process "
            "per GPU (set CUDA_VISIBLE_DEVICES to choose them)"
        )


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``cellbench <argv>`` in ``nproc`` processes under torchrun; the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    check_nproc(nproc)
    if "OMP_NUM_THREADS" not in os.environ:
        # torchrun would set 1 and warn; share this machine's cores between the processes
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # the agent's own log lines (rendezvous, "worker group failed") repeat what the workers say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    args = get_args_parser().parse_args(torchrun_arguments(nproc, argv))
    try:
        run(args)
    except ChildFailedError as exc:
        return failure_code(exc.failures)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


def failure_code(failures: dict) -> int:
    """The launcher's exit status from torchrun's failed ranks, from the failure that caused the
    others: once one rank fails, torchrun stops the rest with SIGTERM, so a rank terminated that
    way speaks only when no other rank failed. A rank stopped by any other signal (SIGKILL from
    the OOM killer, SIGSEGV) is a cause, then a rank that exited with its own code; within each,
    rank 0 (the rank that speaks for the run) else the lowest. A signal counts as 128 + its number,
    as a shell reports it."""
    import signal

    def cause_first(rank: int) -> tuple[int, int]:
        code = int(failures[rank].exitcode)
        kind = 2 if code == -signal.SIGTERM else (0 if code < 0 else 1)
        return kind, rank

    code = int(failures[min(failures, key=cause_first)].exitcode)
    return 128 - code if code < 0 else code
