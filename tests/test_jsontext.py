"""Strict JSON: NaN and infinities become null, NumPy scalars plain numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wsi_dram.jsontext import strict_json


def _strict_loads(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_become_null() -> None:
    data = {
        "nan": math.nan,
        "inf": [1.5, -math.inf, (np.float32(np.inf), np.float64(0.25))],
        "n": np.int64(3),
        "nested": {"x": np.float32(np.nan), "ok": True, "none": None},
        "array": np.array([1.0, np.nan]),
    }
    text = strict_json(data)
    assert "NaN" not in text and "Infinity" not in text
    assert _strict_loads(text) == {
        "nan": None,
        "inf": [1.5, None, [None, 0.25]],
        "n": 3,
        "nested": {"x": None, "ok": True, "none": None},
        "array": [1.0, None],
    }


def test_python_json_would_have_written_nan() -> None:
    """The bug this guards against: json.dumps writes NaN by default."""
    with pytest.raises(ValueError, match="non-JSON constant NaN"):
        _strict_loads(json.dumps({"a": math.nan}))
    assert _strict_loads(strict_json({"a": math.nan}, indent=1)) == {"a": None}
