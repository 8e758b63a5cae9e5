"""Direct TIFF tile reads give OpenSlide's pixels, or are not used at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import CASES, DATA, need
from wsi_dram.cache.tiff_source import TiffTiles
from wsi_dram.slides.reader import open_slide

SLIDES = [
    DATA / "slides/aperio/CMU-1-Small-Region.svs",
    DATA / "slides/generic-tiff/wsp_example.tif",
    DATA / "slides/openslide-python-fixtures/boxes.tiff",
    CASES / "slide-nodata-transparent-tiles/nodata_tiles.tif",
    CASES / "level-factors-1-4-16-32/levels_1_4_16_32.tif",
]


@pytest.mark.parametrize("path", SLIDES, ids=lambda p: p.name)
def test_every_level_reads_the_pixels_openslide_reads(path):
    with open_slide(need(path), mpp=1.0) as slide:
        tiles = TiffTiles.open(slide)
        assert tiles is not None
        try:
            for level, (w, h) in enumerate(slide.level_dimensions):
                assert tiles.has_level(level)
                # Start outside the level and run past its far edge: white there.
                w, h = min(w, 2000) + 9, min(h, 2000) + 9
                mine = tiles.read(level, -7, -5, w, h)
                theirs = slide.read_level_region(level, -7, -5, w, h)
                assert mine.shape == (h, w, 3)
                assert np.array_equal(mine, theirs), level
                assert (mine[:5] == 255).all() and (mine[:, :7] == 255).all()
        finally:
            tiles.close()


def test_absent_tiles_read_white():
    path = need(CASES / "slide-nodata-transparent-tiles/nodata_tiles.tif")
    with open_slide(path, mpp=1.0) as slide:
        tiles = TiffTiles.open(slide)
        assert tiles is not None
        level0 = tiles.read(0, 0, 0, 1024, 768)
        tiles.close()
    # README of the case: 655,360 absent pixels, 70,000 tissue pixels.
    assert int((level0 == 255).all(axis=2).sum()) == 655_360
    assert int((level0 == (200, 110, 170)).all(axis=2).sum()) == 70_000
    assert int((level0 == 0).all(axis=2).sum()) == 0


def test_other_vendors_are_left_to_openslide():
    path = need(DATA / "slides/hamamatsu/test3-TRITC-2-560.ndpi")
    with open_slide(path) as slide:
        assert slide.vendor == "hamamatsu"
        assert TiffTiles.open(slide) is None


def test_a_level_that_differs_from_openslide_is_not_read_directly():
    path = need(DATA / "slides/openslide-python-fixtures/boxes.tiff")

    class Shifted:
        """The slide, except that OpenSlide's level 2 pixels differ by one."""

        def __init__(self, slide: Any) -> None:
            self._slide = slide

        def __getattr__(self, name: str) -> Any:
            return getattr(self._slide, name)

        def read_level_region(self, level: int, *args: int) -> np.ndarray:
            pixels = self._slide.read_level_region(level, *args)
            return pixels ^ 1 if level == 2 else pixels

    with open_slide(path) as slide:
        tiles = TiffTiles.open(Shifted(slide))
        assert tiles is not None
        assert [tiles.has_level(k) for k in range(4)] == [True, True, False, True]
        tiles.close()
