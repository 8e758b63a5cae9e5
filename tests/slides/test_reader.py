"""Slide reader: real slides (SOURCES.md values), the field cases, error paths."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import openslide
import pytest

from tests.conftest import CASES, DATA, need
from wsi_dram.errors import SlideError
from wsi_dram.slides.reader import (
    Slide,
    composite_over_white,
    exact_level_factor,
    open_slide,
    slide_info,
    tiff_resolution_mpp,
)

FIXTURES = DATA / "slides" / "openslide-python-fixtures"


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# -- real slides -----------------------------------------------------------------

REAL = [
    # path, (w, h), level_count, factors, mpp, objective, associated
    (
        "aperio/CMU-1-Small-Region.svs",
        (2220, 2967),
        1,
        [1],
        0.499,
        20.0,
        ["label", "macro", "thumbnail"],
    ),
    (
        "hamamatsu/test3-TRITC-2-560.ndpi",
        (3968, 4864),
        7,
        [1, 2, 4, 8, 16, 32, 64],
        0.228175,
        40.0,
        ["macro"],
    ),
    ("generic-tiff/wsp_example.tif", (1472, 690), 3, [1, 2, 4], 0.987197, None, []),
    (
        "openslide-python-fixtures/boxes.tiff",
        (300, 250),
        4,
        [1, 2, 4, 8],
        352.7778,
        None,
        [],
    ),
    (
        "openslide-python-fixtures/small.svs",
        (16, 16),
        1,
        [1],
        0.499,
        20.0,
        ["thumbnail"],
    ),
    (
        "openslide-python-fixtures/boxes_0.dcm",
        (16, 16),
        1,
        [1],
        0.499,
        20.0,
        ["thumbnail"],
    ),
]


@pytest.mark.parametrize(
    ("rel", "size", "levels", "factors", "mpp", "objective", "associated"), REAL
)
def test_real_slide_metadata(
    rel: str,
    size: tuple[int, int],
    levels: int,
    factors: list[int],
    mpp: float,
    objective: float | None,
    associated: list[str],
) -> None:
    with open_slide(need(DATA / "slides" / rel)) as slide:
        assert (slide.width, slide.height) == size
        assert slide.level_count == levels
        assert slide.level_factors == factors
        assert slide.mpp == pytest.approx(mpp, abs=1e-4)
        assert slide.mpp_y == pytest.approx(mpp, abs=1e-4)
        assert slide.mpp_source == "openslide.mpp-x"
        assert slide.objective_power == objective
        assert slide.associated_images == associated
        assert slide.slide_id == Path(rel).stem


def test_vendors() -> None:
    expected = {
        "aperio/CMU-1-Small-Region.svs": "aperio",
        "hamamatsu/test3-TRITC-2-560.ndpi": "hamamatsu",
        "generic-tiff/wsp_example.tif": "generic-tiff",
        "openslide-python-fixtures/boxes_0.dcm": "dicom",
    }
    for rel, vendor in expected.items():
        with open_slide(need(DATA / "slides" / rel)) as slide:
            assert slide.vendor == vendor


def test_boxes_tiff_reported_downsamples_kept_and_factors_exact() -> None:
    with open_slide(need(FIXTURES / "boxes.tiff")) as slide:
        assert slide.level_dimensions == [(300, 250), (150, 125), (75, 62), (37, 31)]
        assert slide.level_downsamples[2] == pytest.approx(4.0161, abs=1e-4)
        assert slide.level_downsamples[3] == pytest.approx(8.0863, abs=1e-4)
        assert slide.best_level_for_downsample(4) == 2
        assert slide.best_level_for_downsample(8) == 3
        assert slide.best_level_for_downsample(3.9) == 1


def test_read_region_matches_openslide_on_real_svs() -> None:
    path = need(DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs")
    reference = openslide.OpenSlide(str(path))
    rgba = np.asarray(reference.read_region((1000, 1500), 0, (300, 200)))
    reference.close()
    assert (rgba[..., 3] == 255).all()
    with open_slide(path) as slide:
        ours = slide.read_region(1000, 1500, 0, 300, 200)
    assert ours.shape == (200, 300, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, rgba[..., :3])


def test_read_level_region_integer_levels_equal_openslide_level_pixels() -> None:
    path = need(DATA / "slides" / "generic-tiff" / "wsp_example.tif")
    reference = openslide.OpenSlide(str(path))
    # Level 1 has downsample exactly 2: OpenSlide reads it without resampling.
    rgba = np.asarray(reference.read_region((2 * 100, 2 * 50), 1, (120, 90)))
    reference.close()
    with open_slide(path) as slide:
        ours = slide.read_level_region(1, 100, 50, 120, 90)
    assert np.array_equal(ours, composite_over_white(rgba))


def test_ndpi_fluorescence_thumbnail_at_8_um() -> None:
    with open_slide(
        need(DATA / "slides" / "hamamatsu" / "test3-TRITC-2-560.ndpi")
    ) as s:
        thumb, downsample = s.thumbnail(8.0)
        # 8 / 0.228175 = 35.06 -> level factor 32, no further averaging.
        assert downsample == 32.0
        assert thumb.shape == (152, 124, 3)
        assert np.array_equal(thumb, s.read_level_region(5, 0, 0, 124, 152))


def test_dicom_opens_and_reads() -> None:
    need(FIXTURES / "boxes_1.dcm")
    with open_slide(need(FIXTURES / "boxes_0.dcm")) as slide:
        pixels = slide.read_region(0, 0, 0, 16, 16)
    assert pixels.shape == (16, 16, 3)
    assert pixels.std() > 0


def test_plain_png_opens_through_imageslide_with_explicit_mpp() -> None:
    path = need(FIXTURES / "boxes.png")
    with pytest.raises(SlideError, match="pixel size unknown"):
        open_slide(path)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.vendor == "image"
        assert (slide.width, slide.height) == (300, 250)
        assert slide.mpp_source == "override"
        pixels = slide.read_region(0, 0, 0, 300, 250)
    from PIL import Image

    assert np.array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))


# -- errors ----------------------------------------------------------------------


def test_unreadable_pixels_raise_slide_error() -> None:
    path = need(FIXTURES / "unreadable.svs")
    with open_slide(path) as slide, pytest.raises(SlideError) as info:
        slide.read_region(0, 0, 0, 16, 16)
    assert "pixels unreadable" in str(info.value)
    assert "unreadable.svs" in str(info.value)


def test_unopenable_and_missing_files_raise_slide_error(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="unopenable.tiff.*Unsupported TIFF"):
        open_slide(need(FIXTURES / "unopenable.tiff"))
    with pytest.raises(SlideError, match="no such slide file"):
        open_slide(tmp_path / "absent.svs")
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="notes.svs.*unsupported slide format"):
        open_slide(text)


def test_bad_level_is_a_slide_error() -> None:
    with open_slide(need(FIXTURES / "small.svs")) as slide, pytest.raises(SlideError):
        slide.read_region(0, 0, 3, 4, 4)


# -- cases -----------------------------------------------------------------------


def test_mpp_missing_names_file_unit_and_remedy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = need(CASES / "mpp-missing" / "no_resolution.tif")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    text = str(info.value)
    assert "no_resolution.tif" in text
    assert "pixel size unknown" in text
    assert "openslide.mpp-x" in text and "ResolutionUnit" in text and '"none"' in text
    assert "--mpp" in text and "`mpp`" in text

    with caplog.at_level(logging.INFO, logger="wsi_dram.slides.reader"):
        slide = open_slide(path, mpp=0.5)
    assert slide.mpp == slide.mpp_y == 0.5
    assert slide.mpp_source == "override"
    assert any("override" in r.getMessage() for r in caplog.records)
    slide.close()


def test_mpp_override_replaces_file_value() -> None:
    with open_slide(need(FIXTURES / "small.svs"), mpp=0.25) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "override"
    with pytest.raises(SlideError, match="positive"):
        open_slide(FIXTURES / "small.svs", mpp=0.0)


def test_mpp_rational_inch_every_path() -> None:
    path = need(CASES / "mpp-rational-inch" / "inch_rational.tif")
    with open_slide(path) as slide:
        assert abs(slide.mpp - 0.3) < 1e-9
        assert abs(slide.mpp_y - 0.3) < 1e-9
        assert abs(slide_info(slide)["mpp"] - 0.3) < 1e-9
    mpp_xy = tiff_resolution_mpp(path)
    assert mpp_xy is not None
    assert abs(mpp_xy[0] - 0.3) < 1e-9 and abs(mpp_xy[1] - 0.3) < 1e-9
    assert (
        tiff_resolution_mpp(need(CASES / "mpp-missing" / "no_resolution.tif")) is None
    )


def test_level_factors_1_4_16_32() -> None:
    with open_slide(
        need(CASES / "level-factors-1-4-16-32" / "levels_1_4_16_32.tif"), mpp=0.5
    ) as slide:
        assert slide.level_dimensions == [(2048, 1536), (512, 384), (128, 96), (64, 48)]
        assert slide.level_factors == [1, 4, 16, 32]
        assert slide.best_level_for_downsample(8) == 1
        assert slide.best_level_for_downsample(32) == 3
        assert slide.best_level_for_downsample(64) == 3
        assert slide.best_level_for_downsample(1) == 0
        level3 = slide.read_level_region(3, 0, 0, 64, 48)
    assert level3.shape == (48, 64, 3)
    block = (level3 == (210, 110, 170)).all(axis=-1)
    assert block.sum() == 768
    rows, cols = np.nonzero(block)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12, 35, 16, 47)
    # No padding: nothing transparent (white) where the stored level has content.
    assert not (level3 == 0).all(axis=-1).any()


NEAR = CASES / "near-integer-downsample-level-choice" / "near_integer.tif"
LEVEL1_SHA = "c817aa8dfb2be320200cb8b33ee54eecbbb6e128bc09bcb1a1d777f13cc3c80b"
LEVEL2_SHA = "a6287ad7f78c1d1f0ff8907a20684b40c33754f09a9118f40c010ac42fa66235"


def test_near_integer_downsamples_level_choice_and_exact_pixels() -> None:
    with open_slide(need(NEAR), mpp=0.25) as slide:
        assert slide.level_downsamples[1] == pytest.approx(4.004557, abs=1e-6)
        assert slide.level_factors == [1, 4, 16]
        assert slide.best_level_for_downsample(4) == 1
        assert slide.best_level_for_downsample(16) == 2
        level1 = slide.read_level_region(1, 0, 0, 256, 192)
        level2 = slide.read_level_region(2, 0, 0, 64, 48)
        assert _sha(level1) == LEVEL1_SHA
        assert _sha(level2) == LEVEL2_SHA
        # A tile read equals the same window of the whole level.
        tile = slide.read_level_region(1, 128, 64, 64, 64)
        assert np.array_equal(tile, level1[64:128, 128:192])
        # Beyond the level edge: white.
        edge = slide.read_level_region(1, 240, 180, 32, 32)
        assert np.array_equal(edge[:12, :16], level1[180:192, 240:256])
        assert (edge[12:] == 255).all() and (edge[:, 16:] == 255).all()


def test_near_integer_fallback_without_tifffile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Formats tifffile cannot read go through an origin-anchored OpenSlide read."""
    monkeypatch.setattr(Slide, "_tiff_level_array", lambda self, level: None)
    with open_slide(need(NEAR), mpp=0.25) as slide:
        assert _sha(slide.read_level_region(1, 0, 0, 256, 192)) == LEVEL1_SHA
        tile = slide.read_level_region(2, 10, 5, 20, 30)
        assert _sha(slide.read_level_region(2, 0, 0, 64, 48)) == LEVEL2_SHA
        assert np.array_equal(
            tile, slide.read_level_region(2, 0, 0, 64, 48)[5:35, 10:30]
        )


NODATA = CASES / "slide-nodata-transparent-tiles" / "nodata_tiles.tif"
TISSUE_RGB = (200, 110, 170)


def test_nodata_tiles_composite_over_white() -> None:
    with open_slide(need(NODATA), mpp=1.0) as slide:
        level0 = slide.read_region(0, 0, 0, 1024, 768)
        level1 = slide.read_level_region(1, 0, 0, 256, 192)
        corner = slide.read_region(896, 640, 0, 256, 256)
        thumb, downsample = slide.thumbnail(4.0)
    white0 = (level0 == 255).all(axis=-1)
    assert white0.sum() == 655_360
    assert not (level0 == 0).all(axis=-1).any()
    tissue0 = (level0 == TISSUE_RGB).all(axis=-1)
    assert tissue0.sum() == 70_000
    assert tissue0[300:500, 350:700].all()
    assert (level1 == 255).all(axis=-1).sum() == 40_960
    assert (level1 == TISSUE_RGB).all(axis=-1).sum() == 4_350
    assert (corner == 255).all()
    # The thumbnail at factor 4 is level 1 itself.
    assert downsample == 4.0 and np.array_equal(thumb, level1)


def test_exact_level_factor() -> None:
    assert exact_level_factor((256, 192), (1025, 769), 4.0046) == 4
    assert exact_level_factor((37, 31), (300, 250), 8.0863) == 8
    assert exact_level_factor((100, 100), (300, 250), 3.0) is None


def test_composite_over_white() -> None:
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)
    out = composite_over_white(rgba)
    assert out.tolist() == [[[255, 255, 255], [10, 20, 30], [127, 127, 127]]]


def test_slide_info_keys() -> None:
    with open_slide(need(DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs")) as s:
        info = slide_info(s)
    assert info["vendor"] == "aperio"
    assert (info["width"], info["height"]) == (2220, 2967)
    assert info["levels"] == [
        {"level": 0, "width": 2220, "height": 2967, "downsample": 1.0, "factor": 1}
    ]
    assert info["associated_images"] == {
        "label": [387, 463],
        "macro": [1280, 431],
        "thumbnail": [574, 768],
    }


def test_thumbnail_is_exact_block_mean_in_any_band_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wsi_dram.slides.reader as reader

    path = need(DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs")
    with open_slide(path) as slide:
        thumb, downsample = slide.thumbnail(8.0)
        full = slide.read_region(0, 0, 0, 2220, 2967).astype(np.float64)
        monkeypatch.setattr(reader, "_THUMBNAIL_BAND_PIXELS", 2220 * 40)
        banded, _ = slide.thumbnail(8.0)
    assert downsample == 16.0
    # 16 x 16 block means of level 0, the partial edge blocks padded with white.
    padded = np.full((186 * 16, 139 * 16, 3), 255.0)
    padded[:2967, :2220] = full
    expected = np.round(padded.reshape(186, 16, 139, 16, 3).mean(axis=(1, 3)))
    assert np.array_equal(thumb, expected.astype(np.uint8))
    assert np.array_equal(banded, thumb)


def test_composite_over_white_matches_the_blend_formula() -> None:
    from wsi_dram.slides.reader import composite_over_white

    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, size=(64, 48, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 255  # opaque rows
    rgba[10:20, :, 3] = 0  # transparent rows
    rgb = rgba[..., :3].astype(float)
    alpha = rgba[..., 3:4].astype(float) / 255
    expected = np.floor(rgb * alpha + 255 * (1 - alpha) + 0.5)
    out = composite_over_white(rgba)
    assert out.dtype == np.uint8 and out.shape == (64, 48, 3)
    assert np.abs(out.astype(float) - expected).max() <= 1
    assert (out[10:20] == 255).all()
    assert np.array_equal(out[:10], rgba[:10, :, :3])


# -- truncated files ---------------------------------------------------------------


def _two_page_tiff(path: Path) -> tuple[bytes, int]:
    """A 256 x 256 RGB page then a 64 x 64 page; (bytes, offset of page 2's IFD)."""
    import tifffile

    idx = np.arange(256 * 256, dtype=np.uint32).reshape(256, 256)
    rgb = np.stack([idx % 251, (idx // 7) % 241, (idx * 13) % 239], 2).astype(np.uint8)
    with tifffile.TiffWriter(path) as writer:
        writer.write(rgb, photometric="rgb", metadata=None)
        writer.write(rgb[::4, ::4], photometric="rgb", metadata=None)
    with tifffile.TiffFile(path) as tif:
        second = tif.pages[1].offset
        first = tif.pages[0]
        assert first.dataoffsets[0] + first.databytecounts[0] <= second
    return path.read_bytes(), second


def test_tiff_cut_before_its_second_directory_is_truncated(tmp_path: Path) -> None:
    """Page 1 is whole but the chain points past the end: Pillow alone would read
    page 1 as a plain image with no pixel size (the "missing mpp" report)."""
    data, second = _two_page_tiff(tmp_path / "whole.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:second])
    for kwargs in ({}, {"mpp": 0.5}, {"fallback_mpp": 0.5}):
        with pytest.raises(SlideError) as info:
            open_slide(cut, **kwargs)
        assert info.value.path == str(cut)
        assert info.value.reason.startswith("file is truncated or damaged")
        assert f"end of its {second} bytes" in info.value.reason
    with open_slide(tmp_path / "whole.tif", mpp=0.5) as whole:  # intact: opens
        assert (whole.width, whole.height) == (256, 256)


def test_real_tiff_cut_to_half_is_truncated(tmp_path: Path) -> None:
    data = need(FIXTURES / "boxes.tiff").read_bytes()
    cut = tmp_path / "boxes.tiff"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="truncated or damaged") as info:
        open_slide(cut, mpp=1.0)
    assert info.value.path == str(cut)
