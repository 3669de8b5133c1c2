"""JSON that every strict parser reads: an undefined number (NaN, ±inf) is ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which is not JSON (jq, browsers,
``JSON.parse``, Go, Rust refuse it). Every JSON file and line cellbench writes goes through
``dumps``: non-finite floats (Python or numpy) become ``None`` first, then the text is written
with ``allow_nan=False``, so a NaN that slips past ``finite`` fails loudly instead of writing
invalid JSON. A metric that is ``null`` means "undefined", never zero.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (dicts, lists, tuples walked)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    # numpy scalars without importing numpy: they have item() and are not containers
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return finite(item())
    return value


def dumps(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN/inf as null and ``allow_nan=False``; ``default=str`` unless
    given (paths, dates)."""
    kwargs.setdefault("default", str)
    return json.dumps(finite(data), allow_nan=False, **kwargs)


def csv_cell(value: Any) -> Any:
    """The same rule for CSV files: an undefined number (None, NaN, inf) is a blank cell."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value
