"""SIGTERM and SIGHUP handled like Ctrl-C (SIGINT).

Schedulers (Slurm, Kubernetes), ``timeout`` and container runtimes stop a process with SIGTERM; a
closed terminal or ssh session sends SIGHUP. Python's default for both is to die on the spot: no
``finally`` runs, so no staged folder is removed, no ``run_end`` is written and the run lock stays.
Inside ``graceful_signals()`` they take the path Ctrl-C takes instead:

    with graceful_signals():
        ...  # SIGTERM/SIGHUP raise Terminated, a KeyboardInterrupt: every cleanup that already
             # handles Ctrl-C (staged folders, atomic writes, the CLI's exit code) handles them

    with graceful_signals(on_signal=stop, signals=STOP_SIGNALS):
        ...  # SIGINT/SIGTERM/SIGHUP call stop(signum) instead: a loop's stop flag (the trainer),
             # or forwarding the signal to child processes (sweep trials)

A signal that was ignored when the block starts (SIGHUP under ``nohup``, SIGINT in a background
job) stays ignored. The previous handlers are restored on exit, so contexts nest (the CLI root
wraps every command; the trainer's stop flag takes over for the length of a training). Outside
the main thread Python cannot install handlers, and the context does nothing.

Exit codes follow the shell's convention, 128 + the signal number: 130 after SIGINT (Ctrl-C),
143 after SIGTERM, 129 after SIGHUP (``exit_code``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """The exit status a shell reports for a process stopped by ``signum``: 128 + signum."""
    return 128 + int(signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised like Ctrl-C's KeyboardInterrupt, naming the signal."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal_name(self.signum)


def _raise_terminated(signum: int) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def graceful_signals(
    on_signal: Callable[[int], None] | None = None,
    signals: Sequence[int] = TERMINATION_SIGNALS,
) -> Iterator[None]:
    """Handle ``signals`` with ``on_signal(signum)`` (default: raise ``Terminated``) inside the
    block; restore the previous handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    callback = on_signal or _raise_terminated
    previous = {}
    try:
        for signum in signals:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a background job): keep it ignored
            previous[signum] = signal.signal(signum, lambda s, frame: callback(s))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
