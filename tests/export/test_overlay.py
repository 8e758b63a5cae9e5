"""PNG heatmap overlay and glimpse pictures: colours at known thumbnail pixels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.export.conftest import (
    HOT,
    SPOT,
    SPOT_P,
    SWAPPED,
    THUMB_DS,
    THUMB_RGB,
    TISSUE,
)
from wsi_dram.export.heatmap import Heatmap, colour_lut
from wsi_dram.export.overlay import (
    PNG_MARGIN_LEFT,
    PNG_MARGIN_TOP,
    GlimpsePath,
    glimpse_colours,
    write_glimpse_gif,
    write_glimpse_png,
    write_heatmap_png,
)

LUT = colour_lut("viridis")
ALPHA = 0.6


def blended(p: float) -> np.ndarray:
    """Expected PNG colour over the uniform thumbnail, by hand."""
    colour = LUT[round(p * 255)].astype(float)
    return ALPHA * colour + (1 - ALPHA) * np.array(THUMB_RGB, float)


def png_pixel(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """PNG colour at level-0 (x, y): thumbnail pixel floor(x / d), floor(y / d)."""
    col = PNG_MARGIN_LEFT + math.floor(x / THUMB_DS)
    row = PNG_MARGIN_TOP + math.floor(y / THUMB_DS)
    return image[row, col].astype(float)


@pytest.fixture
def heatmap_png(
    wide_heatmap: Heatmap, wide_thumbnail: np.ndarray, tmp_path: Path
) -> np.ndarray:
    path = write_heatmap_png(
        wide_heatmap,
        tmp_path / "wide.heatmap.png",
        wide_thumbnail,
        THUMB_DS,
        TISSUE,
        ALPHA,
    )
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_png_size(heatmap_png: np.ndarray) -> None:
    # 625 x 187 thumbnail + 20 left + 110 right, 50 top + 20 bottom.
    assert heatmap_png.shape == (50 + 187 + 20, 20 + 625 + 110, 3)


def test_png_hot_colour_under_spot(heatmap_png: np.ndarray) -> None:
    np.testing.assert_allclose(png_pixel(heatmap_png, *SPOT), blended(SPOT_P), atol=2)
    np.testing.assert_allclose(png_pixel(heatmap_png, 5400, 2600), blended(HOT), atol=2)
    np.testing.assert_allclose(png_pixel(heatmap_png, *SWAPPED), blended(0.1), atol=2)


def test_png_transparent_outside_tissue_and_unscored(heatmap_png: np.ndarray) -> None:
    thumb = np.array(THUMB_RGB, float)
    # Outside the tissue box (x < 1000) though scored; the unscored cell
    # (15, 50) inside the tissue; its scored neighbour (15, 51).
    np.testing.assert_allclose(png_pixel(heatmap_png, 600, 3000), thumb, atol=2)
    np.testing.assert_allclose(png_pixel(heatmap_png, 13156, 4156), thumb, atol=2)
    np.testing.assert_allclose(
        png_pixel(heatmap_png, 13412, 4156), blended(0.1), atol=2
    )


def test_png_tissue_outline_drawn(heatmap_png: np.ndarray) -> None:
    # Tissue left edge x = 1000 -> thumbnail x 31.25; the outline is dark there.
    row = PNG_MARGIN_TOP + 90
    strip = heatmap_png[row, PNG_MARGIN_LEFT + 29 : PNG_MARGIN_LEFT + 34].astype(int)
    assert strip.sum(axis=1).min() < 200


GLIMPSES = GlimpsePath(np.array([SPOT, (15000.0, 1000.0)]), [320.0, 1280.0])


def box_edges(centre: tuple[float, float], size: float) -> tuple[int, int, int, int]:
    """Thumbnail columns/rows of a glimpse square's left/top/right/bottom, by hand."""
    x, y = centre
    left = math.floor((x - size / 2) / THUMB_DS)
    top = math.floor((y - size / 2) / THUMB_DS)
    right = math.ceil((x + size / 2) / THUMB_DS) - 1
    bottom = math.ceil((y + size / 2) / THUMB_DS) - 1
    return left, top, right, bottom


def test_glimpse_png_places_boxes(wide_thumbnail: np.ndarray, tmp_path: Path) -> None:
    path = write_glimpse_png(tmp_path / "g.png", wide_thumbnail, THUMB_DS, GLIMPSES)
    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    assert image.shape[1] == 625 and image.shape[0] > 187
    first, last = (tuple(int(v) for v in c) for c in glimpse_colours(2))
    assert first != last

    # First glimpse, big square: SPOT (4964, 2364) +- 640 -> columns 135..175.
    left, top, right, bottom = box_edges(SPOT, 1280)
    assert (left, top, right, bottom) == (135, 53, 175, 93)
    mid_row = 80  # away from the centre dot and the path line
    assert tuple(image[mid_row, left]) == first
    assert tuple(image[mid_row, right]) == first
    assert tuple(image[top, 150]) == first
    assert tuple(image[bottom, 150]) == first
    assert tuple(image[mid_row, left - 2]) == THUMB_RGB
    # The same square with x and y swapped would have its left edge at column
    # floor((2364 - 640) / 32) = 53: nothing is drawn there.
    assert tuple(image[80, 53]) == THUMB_RGB

    # Second glimpse, small square: (15000, 1000) +- 160.
    left, top, right, bottom = box_edges((15000.0, 1000.0), 320)
    assert tuple(image[(top + bottom) // 2 - 2, left]) == last


def test_glimpse_gif_frames(wide_thumbnail: np.ndarray, tmp_path: Path) -> None:
    path = write_glimpse_gif(tmp_path / "g.gif", wide_thumbnail, THUMB_DS, GLIMPSES)
    left, top, _, bottom = box_edges((15000.0, 1000.0), 320)
    last = glimpse_colours(2)[1].astype(int)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        assert gif.size == (625, 187)
        frames = []
        for i in range(2):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")).astype(int))
    at = ((top + bottom) // 2 - 2, left)
    assert np.abs(frames[0][at] - np.array(THUMB_RGB)).max() <= 8  # not drawn yet
    assert np.abs(frames[1][at] - last).max() <= 8  # palette: close, not exact
