"""The tissue log line names the threshold that was used.

Fluorescence slides are thresholded on brightness, bright-field ones on
saturation; the INFO line of :func:`detect_tissue` must say which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from wsi_dram.tissue import detect_tissue


@dataclass
class _Slide:
    """The parts of a slide :func:`detect_tissue` reads: a fixed thumbnail."""

    thumb: np.ndarray
    slide_id: str
    mpp: float = 8.0
    mpp_y: float = 8.0

    @property
    def path(self) -> Path:
        return Path(f"{self.slide_id}.tif")

    @property
    def width(self) -> int:
        return int(self.thumb.shape[1])

    @property
    def height(self) -> int:
        return int(self.thumb.shape[0])

    def thumbnail(self, target_mpp: float) -> tuple[np.ndarray, float]:
        return self.thumb, 1.0


def _fluorescence() -> np.ndarray:
    # Dark noisy background (0-10) with one bright 40 x 60 block: "auto" mode
    # treats it as fluorescence (see test_tissue.py).
    rgb = np.random.default_rng(3).integers(0, 11, (120, 160, 3)).astype(np.uint8)
    rgb[30:70, 50:110, 0] = 120
    return rgb


def _bright_field() -> np.ndarray:
    rgb = np.full((120, 160, 3), 245, np.uint8)
    rgb[30:70, 50:110] = (200, 80, 150)
    return rgb


@pytest.mark.parametrize(
    ("thumb", "kind"),
    [(_fluorescence(), "brightness"), (_bright_field(), "saturation")],
)
def test_log_names_the_threshold_kind(
    thumb: np.ndarray, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="wsi_dram.tissue"):
        tissue = detect_tissue(_Slide(thumb, "s"))  # type: ignore[arg-type]
    assert tissue.mask.sum() == 40 * 60
    lines = [r.getMessage() for r in caplog.records if "threshold" in r.getMessage()]
    assert len(lines) == 1
    assert f", {kind} threshold " in lines[0]
    other = "saturation" if kind == "brightness" else "brightness"
    assert other not in lines[0]
