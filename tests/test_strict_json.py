"""cellbench.strict_json: NaN and infinities are null in JSON and blank in CSV."""

from __future__ import annotations

import json

import numpy as np

from cellbench.strict_json import csv_cell, dumps


def test_non_finite_numbers_become_null_and_the_text_parses_strictly():
    data = {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": (2, None)}
    text = dumps(data)
    parsed = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert parsed == {"a": None, "b": [None, 1.5], "c": None, "d": [2, None]}


def test_csv_cells():
    assert [csv_cell(v) for v in (float("nan"), None, -float("inf"), 0.5, "x")] == [
        "", "", "", 0.5, "x",
    ]  # fmt: skip
