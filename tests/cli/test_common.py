"""The CLI's stderr lines: ``log`` prints text as text (a slide named ``case[HE].tif`` lost its
``[HE]``, and a path holding ``[/tmp]`` raised MarkupError, when log read its line as markup);
``log_markup`` is the one that styles."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cellbench.cli import common


@pytest.fixture
def stderr(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(common, "err_console", Console(file=out, width=300, color_system=None))
    return out


def test_log_prints_brackets_in_paths_and_messages_literally(stderr):
    common.log("slides/case[HE].tif: resuming after 3 of 9 finished tiles")
    common.log("curves written to out[/tmp]/curves.png")
    text = stderr.getvalue()
    assert "slides/case[HE].tif: resuming" in text
    assert "out[/tmp]/curves.png" in text


def test_log_markup_styles_and_the_caller_escapes(stderr):
    from rich.markup import escape

    common.log_markup(f"sweep [bold]{escape('grid[1]')}[/] · {escape('runs/[x]')}")
    assert stderr.getvalue().strip() == "sweep grid[1] · runs/[x]"
