"""Heatmap TIFF re-read by OpenSlide; NGFF label re-read by zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import zarr

from tests.export.conftest import HOT, SPOT, SPOT_P, SWAPPED, make_wide_heatmap
from wsi_dram.export.heatmap import Heatmap, colour_lut, colourize, sample_raster
from wsi_dram.export.tiff import (
    heatmap_label_array,
    heatmap_renderer,
    write_heatmap_label,
    write_heatmap_tiff,
)

LUT = colour_lut("viridis")


def lut(p: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in LUT[round(p * 255)])


def pixel(slide: openslide.OpenSlide, x: float, y: float, level: int = 0) -> tuple:
    """RGB of the level-``level`` pixel holding level-0 point (x, y)."""
    d = 2**level
    x0, y0 = int(x) // d * d, int(y) // d * d
    return tuple(
        slide.read_region((x0, y0), level, (1, 1)).convert("RGB").getpixel((0, 0))
    )


@pytest.fixture(scope="module")
def wide_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    heat = make_wide_heatmap()
    return write_heatmap_tiff(heat, tmp_path_factory.mktemp("tif") / "wide.heatmap.tif")


def test_openslide_size_levels_mpp(wide_tiff: Path) -> None:
    with openslide.OpenSlide(wide_tiff) as slide:
        assert slide.dimensions == (20000, 6000)
        # Long side 20000 halved while > 512: 10000, 5000, 2500, 1250, 625, 312.
        assert slide.level_count == 7
        assert slide.level_dimensions[3] == (2500, 750)
        assert slide.level_dimensions[6] == (20000 >> 6, 6000 >> 6)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(
            0.5, rel=1e-4
        )
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(
            0.5, rel=1e-4
        )


@pytest.mark.parametrize("level", [0, 2, 4])
def test_colour_at_spot_not_swapped(wide_tiff: Path, level: int) -> None:
    with openslide.OpenSlide(wide_tiff) as slide:
        assert pixel(slide, *SPOT, level) == lut(SPOT_P)
        assert pixel(slide, *SWAPPED, level) == lut(0.1)
        # Row 0 is not scored, and x > 19684 is past the last column: white.
        assert pixel(slide, 5000, 300, level) == (255, 255, 255)
        assert pixel(slide, 19900, 3000, level) == (255, 255, 255)
        assert pixel(slide, 13156, 4156, level) == (255, 255, 255)  # cell (15, 50)


def test_hot_block_edges_at_level0(wide_tiff: Path) -> None:
    # Hot block x in [4580, 5604), y in [1980, 2748) (cells 17..20, 7..9).
    with openslide.OpenSlide(wide_tiff) as slide:
        assert pixel(slide, 4580, 2000) == lut(HOT)
        assert pixel(slide, 4579, 2000) == lut(0.1)
        assert pixel(slide, 5603, 2747) == lut(HOT)
        assert pixel(slide, 5604, 2747) == lut(0.1)
        assert pixel(slide, 5603, 2748) == lut(0.1)


def test_render_samples_pixel_centres(wide_heatmap: Heatmap) -> None:
    render = heatmap_renderer(wide_heatmap)
    # Level 3 (8 px): pixel 572 covers level-0 [4576, 4584), centre 4580 -> hot.
    tile = render(3, 571, 250, 3, 1)  # (1, 3, 3)
    assert tile.shape == (1, 3, 3) and tile.dtype == np.uint8
    assert [tuple(int(v) for v in c) for c in tile[0]] == [lut(0.1), lut(HOT), lut(HOT)]


def test_label_array(wide_heatmap: Heatmap) -> None:
    label = heatmap_label_array(wide_heatmap, 64)
    assert label.shape == (94, 313) and label.dtype == np.uint8  # ceil(6000/64), ...
    assert label[int(SPOT[1] // 64), int(SPOT[0] // 64)] == round(SPOT_P * 255)
    assert label[int(SWAPPED[1] // 64), int(SWAPPED[0] // 64)] == round(0.1 * 255)
    assert label[2, 100] == 0  # y = 160: unscored row 0


def test_label_written_to_store(wide_heatmap: Heatmap, tmp_path: Path) -> None:
    store = tmp_path / "wide.ome.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=2).attrs["wsi_dram"] = {
        "mpp": 0.5
    }
    array = write_heatmap_label(wide_heatmap, store, 64)
    stored = zarr.open_group(str(store), mode="r", zarr_format=2)
    level0 = np.asarray(stored["labels/heatmap/0"][...])
    np.testing.assert_array_equal(level0, array)
    assert level0[int(SPOT[1] // 64), int(SPOT[0] // 64)] == 252
    assert "heatmap" in dict(stored["labels"].attrs).get("labels", [])


@pytest.mark.parametrize("level", range(7))
def test_run_length_render_equals_per_pixel_sampling(
    wide_heatmap: Heatmap, level: int
) -> None:
    render = heatmap_renderer(wide_heatmap)
    d = 2**level
    for x, y in [
        (4500 // d, 1900 // d),
        (0, 0),
        (19900 // d, 5900 // d),
        (13000 // d, 4000 // d),
    ]:
        fast = render(level, x, y, 256, 200)
        slow = colourize(sample_raster(wide_heatmap, x, y, 256, 200, d))
        np.testing.assert_array_equal(fast, slow)
