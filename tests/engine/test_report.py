"""The Rich reporter prints the engine's text as text: a library error quoted in a reason or a
warning ("[/__w/.../pair.cc:545] Connection closed by peer", from gloo when a rank dies) is not
markup (it raised MarkupError mid-run and ended a training with a traceback)."""

from __future__ import annotations

import io

from rich.console import Console

from cellbench.engine.report import RichReporter

GLOO = "RuntimeError: [/__w/pytorch/third_party/gloo/transport/tcp/pair.cc:545] Connection closed"


def _reporter() -> tuple[RichReporter, io.StringIO]:
    out = io.StringIO()
    return RichReporter(Console(file=out, width=300, color_system=None), show_progress=False), out


def test_messages_warnings_and_epochs_with_brackets_print_literally():
    reporter, out = _reporter()
    reporter.message(f"a process of this 2-process run failed or was lost ({GLOO})")
    reporter.warning("non_finite", "error", f"[red]not markup[/] {GLOO}")
    reporter.run_start({"run": "runs/[b]odd", "device": "cpu"})
    reporter.epoch_end({"epoch": 1, "val_loss": 0.5}, {"epoch": 1}, 1.0)
    text = out.getvalue()
    assert GLOO in text and "[red]not markup[/]" in text and "runs/[b]odd" in text
    assert "epoch 1: val_loss 0.5" in text and "*best*" in text and "[green]" not in text
