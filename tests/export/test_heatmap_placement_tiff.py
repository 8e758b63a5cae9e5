"""The heatmap TIFF of reused compressed tiles equals the tile-by-tile rendering.

:class:`wsi_dram.export.tiff.EncodedTiles` compresses each distinct tile once;
the pixels of every level must be those of
:func:`wsi_dram.export.tiff.heatmap_renderer` written through the writer's own
render path (each tile rendered and compressed by tifffile), read back by
tifffile, and OpenSlide must place a hot cell at the same level-0 spot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from tests.export.conftest import SPOT, SPOT_P, make_wide_heatmap
from wsi_dram.export.heatmap import Heatmap, colour_lut
from wsi_dram.export.tiff import EncodedTiles, heatmap_renderer, write_heatmap_tiff
from wsi_dram.slides.tiff_writer import write_pyramidal_tiff


def tall_heatmap() -> Heatmap:
    """A 1500 x 9000 slide (neither side a multiple of 256), 300 px cells."""
    rng = np.random.default_rng(1)
    probs = rng.uniform(0, 1, (29, 4)).astype(np.float32)
    probs[::7, 3] = np.nan
    return Heatmap(probs, (37.0, 91.0), 300, 450, 1500, 9000, 0.25, "tall", 0.5)


def wide_heatmap() -> Heatmap:
    """The tall heatmap transposed: 9000 x 1500."""
    tall = tall_heatmap()
    return Heatmap(
        tall.probabilities.T, (91.0, 37.0), 300, 450, 9000, 1500, 0.25, "wide", 0.5
    )


@pytest.mark.parametrize("make", [wide_heatmap, tall_heatmap])
def test_reused_tiles_equal_rendered_tiles(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    heat = make()
    fast = write_heatmap_tiff(heat, tmp_path / "fast.tif")
    slow = tmp_path / "slow.tif"
    write_pyramidal_tiff(
        slow, heat.width, heat.height, heatmap_renderer(heat), heat.mpp,
        compression="zlib",
    )  # fmt: skip
    with tifffile.TiffFile(fast) as a, tifffile.TiffFile(slow) as b:
        assert len(a.pages) == len(b.pages) == 6  # 9000 -> 4500 ... 281
        for pa, pb in zip(a.pages, b.pages, strict=True):
            assert pa.shape == pb.shape
            assert (
                pa.compression == pb.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            )
            np.testing.assert_array_equal(pa.asarray(), pb.asarray())


def test_each_distinct_tile_compressed_once() -> None:
    heat = make_wide_heatmap()
    encoded = EncodedTiles(heat)
    tiles = list(encoded(0, heat.width, heat.height, 256))
    # 20000 x 6000 at 256 px: 79 x 24 tiles.
    assert len(tiles) == 79 * 24
    assert encoded.compressed + encoded.reused == len(tiles)
    # Each distinct tile is compressed at least once (two descriptions, e.g.
    # two cells of one colour, may give the same pixels).
    assert encoded.compressed >= len(set(tiles))
    assert encoded.compressed < len(tiles) / 4


def test_openslide_reads_hot_spot(tmp_path: Path) -> None:
    path = write_heatmap_tiff(make_wide_heatmap(), tmp_path / "wide.tif")
    expected = tuple(int(v) for v in colour_lut("viridis")[round(SPOT_P * 255)])
    with openslide.OpenSlide(path) as slide:
        for level in range(slide.level_count):
            d = 2**level
            x, y = int(SPOT[0]) // d * d, int(SPOT[1]) // d * d
            got = (
                slide.read_region((x, y), level, (1, 1)).convert("RGB").getpixel((0, 0))
            )
            assert got == expected
