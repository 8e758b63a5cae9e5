"""Shared fixtures: where the real data lives, and how tests that need it behave.

Tests that need ``../shared`` use the ``shared_data``/``shared_cases`` fixtures
(or :func:`need`). When a file is absent they skip with the reason, except under
``CI=true``, where a missing file is a failure: CI must run on the real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WSI_DRAM_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
CASES = SHARED / "cases"


def need(path: Path) -> Path:
    """Return ``path`` if it exists; otherwise skip (or fail under CI=true)."""
    if path.exists():
        return path
    reason = f"needs {path} (the shared test data); not found"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def shared_data() -> Path:
    """The folder of real slides, annotations and MNIST (``../shared/data``)."""
    return need(DATA)


@pytest.fixture
def shared_cases() -> Path:
    """The folder of reproduced field problems (``../shared/cases``)."""
    return need(CASES)
