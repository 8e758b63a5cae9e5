"""The streaming pyramidal TIFF writer, checked through OpenSlide and tifffile."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from wsi_dram.slides.tiff_writer import pyramid_dimensions, write_pyramidal_tiff


def _pattern(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """A level-dependent, position-dependent pattern (exact pixels to compare)."""
    rows, cols = np.mgrid[y : y + h, x : x + w]
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = (cols * 7 + level * 40) % 256
    out[..., 1] = (rows * 3 + cols) % 256
    out[..., 2] = ((cols // 16 + rows // 16) % 2) * 200 + level
    return out


def _smooth(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """A smooth pattern that JPEG keeps within a few grey levels."""
    rows, cols = np.mgrid[y : y + h, x : x + w].astype(np.float64)
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = 128 + 100 * np.sin(cols / 40 + level)
    out[..., 1] = 128 + 100 * np.cos(rows / 30)
    out[..., 2] = 90 + 20 * level
    return out


def test_pyramid_dimensions_by_hand() -> None:
    assert pyramid_dimensions(4096, 3072, 512) == [
        (4096, 3072),
        (2048, 1536),
        (1024, 768),
        (512, 384),
    ]
    assert pyramid_dimensions(1000, 700, 100) == [
        (1000, 700),
        (500, 350),
        (250, 175),
        (125, 87),
        (62, 43),
    ]
    assert pyramid_dimensions(300, 200, 512) == [(300, 200)]


def test_pyramid_dimensions_stops_at_one_pixel() -> None:
    # 4 px high: levels 0..2 (4, 2, 1 px), level 3 would be 0 px high.
    assert pyramid_dimensions(4096, 4, 16) == [(4096, 4), (2048, 2), (1024, 1)]


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_lossless_pyramid_opens_in_openslide_with_exact_pixels(
    tmp_path: Path, compression: str
) -> None:
    path = tmp_path / "slide.tif"
    dims = write_pyramidal_tiff(
        path, 1024, 768, _pattern, mpp=0.25, compression=compression, min_size=100
    )
    assert dims == [(1024, 768), (512, 384), (256, 192), (128, 96), (64, 48)]
    assert openslide.OpenSlide.detect_format(str(path)) == "generic-tiff"
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == tuple(dims)
        assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0, 16.0)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25)
        for level in range(5):
            factor = 2**level
            # A window crossing tile borders at levels 0-1.
            x, y, w, h = 200 >> level, 230 >> level, 100 >> level, 90 >> level
            got = slide.read_region((x * factor, y * factor), level, (w, h))
            rgb = np.asarray(got.convert("RGB"))
            np.testing.assert_array_equal(rgb, _pattern(level, x, y, w, h))


def test_jpeg_pyramid_within_jpeg_loss(tmp_path: Path) -> None:
    path = tmp_path / "slide.tif"
    write_pyramidal_tiff(path, 1024, 768, _smooth, mpp=0.5, min_size=200)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_count == 4
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        for level, (w, h) in enumerate(slide.level_dimensions):
            got = np.asarray(slide.read_region((0, 0), level, (w, h)).convert("RGB"))
            diff = np.abs(got.astype(int) - _smooth(level, 0, 0, w, h))
            assert diff.mean() < 2.0
            assert np.percentile(diff, 99) <= 6


def test_uneven_size_floors_levels_and_keeps_every_level_exact(
    tmp_path: Path,
) -> None:
    path = tmp_path / "odd.tif"
    dims = write_pyramidal_tiff(
        path, 1001, 703, _pattern, mpp=0.5, compression="zlib", min_size=250
    )
    assert dims == [(1001, 703), (500, 351), (250, 175)]
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3
        for level, page in enumerate(tif.pages):
            w, h = dims[level]
            assert page.shape == (h, w, 3)
            assert page.is_tiled and page.tilewidth == 256
            np.testing.assert_array_equal(page.asarray(), _pattern(level, 0, 0, w, h))
            xres = page.tags["XResolution"].value
            assert xres[0] / xres[1] == pytest.approx(1e4 / (0.5 * 2**level))
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == tuple(dims)
        # OpenSlide derives the downsample from the floored sizes.
        assert slide.level_downsamples[1] == pytest.approx((1001 / 500 + 703 / 351) / 2)


def test_render_is_asked_one_tile_at_a_time(tmp_path: Path) -> None:
    calls: list[tuple[int, int, int, int, int]] = []
    lock = threading.Lock()

    def render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        with lock:
            calls.append((level, x, y, w, h))
        return _pattern(level, x, y, w, h)

    dims = write_pyramidal_tiff(
        tmp_path / "s.tif", 700, 600, render, mpp=1.0, tile=128, min_size=350
    )
    assert dims == [(700, 600), (350, 300)]
    # 6 x 5 tiles at level 0, 3 x 3 at level 1; each asked once, none bigger
    # than a tile, and together they cover each level exactly.
    assert len(calls) == 30 + 9 == len(set(calls))
    assert max(max(c[3], c[4]) for c in calls) == 128
    for level, (w, h) in enumerate(dims):
        area = sum(c[3] * c[4] for c in calls if c[0] == level)
        assert area == w * h


def test_description_becomes_openslide_comment(tmp_path: Path) -> None:
    path = tmp_path / "d.tif"
    write_pyramidal_tiff(path, 300, 200, _smooth, mpp=0.5, description="hello")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.comment"] == "hello"
        assert slide.level_count == 1
    # Non-ASCII (a slide id like "späce é"): escaped, not refused.
    path = tmp_path / "u.tif"
    write_pyramidal_tiff(path, 300, 200, _smooth, mpp=0.5, description="späce é")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.comment"] == "sp\\xe4ce \\xe9"


def test_failed_render_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "fail.tif"

    def render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if level == 1:
            raise RuntimeError("boom")
        return _pattern(level, x, y, w, h)

    with pytest.raises(RuntimeError, match="boom"):
        write_pyramidal_tiff(path, 600, 600, render, mpp=0.5, min_size=256)
    assert list(tmp_path.iterdir()) == []


def test_wrong_render_shape_is_reported(tmp_path: Path) -> None:
    def render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.zeros((h, w), np.uint8)

    with pytest.raises(ValueError, match="expected uint8"):
        write_pyramidal_tiff(tmp_path / "bad.tif", 300, 300, render, mpp=0.5)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tile"):
        write_pyramidal_tiff(tmp_path / "a.tif", 64, 64, _pattern, mpp=0.5, tile=100)
    with pytest.raises(ValueError, match="compression"):
        write_pyramidal_tiff(
            tmp_path / "a.tif", 64, 64, _pattern, mpp=0.5, compression="webp"
        )
    with pytest.raises(ValueError, match="mpp"):
        write_pyramidal_tiff(tmp_path / "a.tif", 64, 64, _pattern, mpp=0.0)
