"""``python -m cellbench.cli.trial train ...``: run ``cellbench train`` as a sweep trial.

The one thing it adds to ``python -m cellbench``: on Linux it asks the kernel
(``prctl(PR_SET_PDEATHSIG, SIGINT)``) to send the trial a SIGINT when the thread that started it
ends. A sweep killed with SIGKILL, or a Ray worker torn down by ASHA, then leaves trials that
checkpoint and end ``interrupted`` (a rerun resumes them) instead of orphans that keep training
and hold their run's lock. Elsewhere it is plain ``cellbench``.
"""

from __future__ import annotations

import os
import signal
import sys

from cellbench.sweep.local import PARENT_ENV  # the pid of the process that started the trial

PR_SET_PDEATHSIG = 1


def ask_for_sigint_on_parent_death() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # the parent died before prctl (no signal will come): stop now. Compared with the pid the
    # parent gave, not with 1: in a container the sweep itself may be pid 1
    expected = os.environ.get(PARENT_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        raise SystemExit(130)


def main() -> None:
    ask_for_sigint_on_parent_death()
    from cellbench.cli.app import app

    app(args=sys.argv[1:], prog_name="cellbench")


if __name__ == "__main__":
    main()
