"""A wide synthetic slide with one asymmetric hot region at a known place.

Slide 20000 x 6000 level-0 px, mpp 0.5. Fields of 512 px every 256 px from
origin (100, 60), so cell (0, 0) (the 256 px square centred on field (0, 0))
starts at (228, 188). Hot block: rows 7..9, cols 17..20 at 0.9, with the spot
cell (row 8, col 18) at 0.99. Its centre is level-0 (4964, 2364); the swapped
point (2364, 4964) lies in a cold cell. Row 0 is not scored (NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from wsi_dram.export.heatmap import Heatmap

WIDTH, HEIGHT, MPP = 20000, 6000, 0.5
STRIDE, FIELD, ORIGIN = 256, 512, (100.0, 60.0)
ROWS, COLS = 22, 76
COLD, HOT, SPOT_P = 0.1, 0.9, 0.99
SPOT = (4964.0, 2364.0)  # level-0 (x, y), centre of cell (8, 18)
SWAPPED = (SPOT[1], SPOT[0])
# Level-0 box of the hot block: cols 17..20, rows 7..9 (by hand from cell origin).
HOT_BOX = (228 + 17 * 256, 188 + 7 * 256, 228 + 21 * 256, 188 + 10 * 256)
THUMB_DS = 32.0
THUMB_RGB = (220, 190, 210)
TISSUE = box(1000, 500, 19000, 5500)


def make_wide_heatmap() -> Heatmap:
    """The wide slide's heatmap (see the module docstring)."""
    probs = np.full((ROWS, COLS), COLD, dtype=np.float32)
    probs[7:10, 17:21] = HOT
    probs[8, 18] = SPOT_P
    probs[0, :] = np.nan
    probs[15, 50] = np.nan  # a hole in the scoring, inside the tissue
    return Heatmap(probs, ORIGIN, STRIDE, FIELD, WIDTH, HEIGHT, MPP, "wide", 0.93)


@pytest.fixture
def wide_heatmap() -> Heatmap:
    return make_wide_heatmap()


@pytest.fixture
def wide_thumbnail() -> np.ndarray:
    # 6000 / 32 = 187.5 -> 187 rows; 20000 / 32 = 625 columns.
    return np.tile(np.array(THUMB_RGB, np.uint8), (187, 625, 1))
