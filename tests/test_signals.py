"""``graceful_signals``: SIGTERM and SIGHUP take Ctrl-C's path, previous handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from cellbench.signals import STOP_SIGNALS, Terminated, exit_code, graceful_signals


def test_sigterm_raises_terminated_a_keyboard_interrupt_naming_the_signal():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(KeyboardInterrupt) as caught, graceful_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            cleaned.append(True)  # a `finally` runs, as after Ctrl-C (the default handler kills)
    assert isinstance(caught.value, Terminated)
    assert (caught.value.signum, caught.value.name) == (signal.SIGTERM, "SIGTERM")
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_stop_callback_gets_every_stop_signal_instead_of_an_exception():
    seen = []
    with graceful_signals(on_signal=seen.append, signals=STOP_SIGNALS):
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            os.kill(os.getpid(), signum)
    assert seen == [signal.SIGHUP, signal.SIGTERM, signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored_and_contexts_nest():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        outer = []
        with graceful_signals(on_signal=outer.append):
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            inner = []
            with graceful_signals(on_signal=inner.append, signals=STOP_SIGNALS):
                os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # the outer handler is back
        assert (outer, inner) == ([signal.SIGTERM], [signal.SIGTERM])
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_exit_codes_follow_the_shell_convention():
    assert [exit_code(s) for s in STOP_SIGNALS] == [130, 143, 129]
