"""Strict JSON text for every file the project writes.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which JSON cannot
express and strict readers (``jq``, browsers, ``json.loads(..., parse_constant)``)
refuse. Every report, metrics line and manifest goes through :func:`strict_json`,
which writes those values as ``null`` and NumPy scalars as plain numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``.

    Dicts, lists and tuples are copied recursively; NumPy scalars and arrays
    become Python numbers and lists.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON text (NaN and ±inf written as ``null``).

    Args:
        data: Dicts, lists, strings, numbers (Python or NumPy), bools, None.
        indent: As in :func:`json.dumps`; None writes one line.

    Raises:
        TypeError: ``data`` holds something JSON cannot express.
    """
    return json.dumps(finite(data), indent=indent, allow_nan=False)
