"""Tissue detection: the field cases (exact masks) and real slides.

The case thumbnails are treated as thumbnails at the default 8 µm/px.
"""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from PIL import Image
from shapely.geometry import box

from tests.conftest import CASES, DATA, need
from wsi_dram.errors import NoTissueError
from wsi_dram.slides.reader import open_slide
from wsi_dram.tissue import (
    TissueParams,
    detect_tissue,
    is_fluorescence,
    mask_to_polygons,
    pen_mask_rgb,
    tissue_mask_rgb,
)

THUMB_MPP = 8.0


def _load(case: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    folder = CASES / case
    rgb = np.asarray(Image.open(need(folder / name)).convert("RGB"))
    expected = np.asarray(Image.open(need(folder / "expected_tissue_mask.png"))) > 0
    return rgb, expected


def test_black_border_case() -> None:
    rgb, expected = _load("tissue-black-border", "black_border_thumb.png")
    mask = tissue_mask_rgb(rgb, THUMB_MPP)
    band = np.zeros(mask.shape, bool)
    band[:, -40:] = True
    band[-30:, :] = True
    assert band.sum() == 13_200
    assert expected.sum() == 8_467
    assert (mask & band).sum() == 0
    assert np.array_equal(mask, expected)


def test_pen_marks_case() -> None:
    rgb, expected = _load("tissue-pen-marks", "pen_marks_thumb.png")
    mask = tissue_mask_rgb(rgb, THUMB_MPP)
    blue = (rgb == (35, 60, 190)).all(axis=-1)
    green = (rgb == (40, 150, 70)).all(axis=-1)
    black = (rgb == (25, 25, 30)).all(axis=-1)
    assert (blue.sum(), green.sum(), black.sum()) == (1_100, 564, 81)
    assert (mask & (blue | green | black)).sum() == 0
    assert np.array_equal(mask, expected)
    ink = pen_mask_rgb(rgb, THUMB_MPP, TissueParams())
    assert ink[blue].all() and ink[green].all()
    assert not (ink & expected).any()


def test_pen_filter_off_keeps_ink_as_saturated() -> None:
    rgb, _ = _load("tissue-pen-marks", "pen_marks_thumb.png")
    mask = tissue_mask_rgb(rgb, THUMB_MPP, TissueParams(pen_filter=False))
    blue = (rgb == (35, 60, 190)).all(axis=-1)
    assert mask[blue].mean() > 0.9  # the filter is what removes it


def test_blank_slide_every_level_and_error() -> None:
    path = need(CASES / "tissue-blank-slide-noise" / "blank_slide.tif")
    with open_slide(path, mpp=0.5) as slide:
        for level in range(slide.level_count):
            w, h = slide.level_dimensions[level]
            pixels = slide.read_level_region(level, 0, 0, w, h)
            factor = slide.level_factors[level] or 1
            assert tissue_mask_rgb(pixels, 0.5 * factor).sum() == 0
        with pytest.raises(NoTissueError) as info:
            detect_tissue(slide)
    assert "no tissue found in blank_slide.tif" in str(info.value)


def test_nodata_tiles_tissue_counts() -> None:
    path = need(CASES / "slide-nodata-transparent-tiles" / "nodata_tiles.tif")
    with open_slide(path, mpp=2.0) as slide:
        level0 = slide.read_region(0, 0, 0, 1024, 768)
        level1 = slide.read_level_region(1, 0, 0, 256, 192)
        tissue = detect_tissue(slide)
    mask0 = tissue_mask_rgb(level0, 2.0)
    assert mask0.sum() == 70_000
    assert mask0[300:500, 350:700].all()
    assert tissue_mask_rgb(level1, 8.0).sum() == 4_350
    # Thumbnail at 8 µm/px = level 1 (4 x 2 µm): the block spans x 350-700, y 300-500.
    assert tissue.downsample == 4.0
    # Level 1 keeps level-0 columns 352, 356, ..., 696 of the block: 87 x 50 px.
    assert tissue.bbox == (352, 300, 700, 500)
    assert tissue.mask.sum() == 4_350
    assert tissue.geometry.area == 4_350 * 16
    assert tissue.area_mm2 == pytest.approx(4_350 * 16 * 2.0 * 2.0 / 1e6)
    assert (
        tissue.geometry.symmetric_difference(box(350, 300, 700, 500)).area
        < 0.1 * 70_000
    )


def test_dark_floor_is_absolute() -> None:
    rgb = np.full((60, 60, 3), 240, np.uint8)
    rgb[10:50, 10:50] = (40, 5, 30)  # saturated but darker than the limit
    assert tissue_mask_rgb(rgb, THUMB_MPP).sum() == 0
    rgb[10:50, 10:50] = (160, 60, 140)
    assert tissue_mask_rgb(rgb, THUMB_MPP).sum() == 1_600


def test_small_objects_and_holes_in_mm2() -> None:
    rgb = np.full((100, 100, 3), 240, np.uint8)
    pink = (200, 110, 170)
    rgb[10:60, 10:60] = pink  # 2500 px = 0.16 mm² at 8 µm/px
    rgb[30:33, 30:33] = 240  # 9-px hole: 0.000576 mm²
    rgb[80:90, 80:90] = pink  # 100 px = 0.0064 mm²
    params = TissueParams(min_object_mm2=0.01, min_hole_mm2=0.01, closing_um=0)
    mask = tissue_mask_rgb(rgb, THUMB_MPP, params)
    assert mask.sum() == 2500  # hole filled, small piece dropped
    keep_all = TissueParams(min_object_mm2=0.0, min_hole_mm2=0.0, closing_um=0)
    assert tissue_mask_rgb(rgb, THUMB_MPP, keep_all).sum() == 2500 - 9 + 100


def test_mask_to_polygons_exact_with_holes() -> None:
    mask = np.zeros((6, 7), bool)
    mask[1:5, 1:6] = True
    mask[2:4, 2:4] = False
    mask[5, 6] = True
    geometry = mask_to_polygons(mask, 4.0)
    assert geometry.area == mask.sum() * 16
    assert len(geometry.geoms) == 2
    big = max(geometry.geoms, key=lambda g: g.area)
    assert big.exterior.bounds == (4.0, 4.0, 24.0, 20.0)
    assert len(big.interiors) == 1
    assert big.interiors[0].bounds == (8.0, 8.0, 16.0, 16.0)
    assert mask_to_polygons(np.zeros((3, 3), bool)).is_empty


def test_real_slide_wsp_example() -> None:
    with open_slide(need(DATA / "slides" / "generic-tiff" / "wsp_example.tif")) as s:
        tissue = detect_tissue(s)
        thumb, downsample = s.thumbnail(8.0)
    # 8 / 0.987 = 8.1 -> level factor 4 then 2 x 2 blocks: downsample 8.
    assert downsample == 8.0 and tissue.mask.shape == thumb.shape[:2]
    # Two fragments (SOURCES.md): the two largest pieces hold nearly all tissue.
    areas = sorted((g.area for g in tissue.geometry.geoms), reverse=True)
    assert len(areas) >= 2 and sum(areas[:2]) > 0.9 * sum(areas)
    left = box(0, 0, 736, 690)
    assert tissue.geometry.intersection(left).area > 0.3 * tissue.geometry.area
    assert tissue.geometry.difference(left).area > 0.2 * tissue.geometry.area
    # The glass in the corners is not tissue.
    assert not tissue.mask[:4, :4].any() and not tissue.mask[-4:, -4:].any()
    expected_mm2 = tissue.mask.sum() * 64 * s.mpp * s.mpp_y / 1e6
    assert tissue.area_mm2 == pytest.approx(expected_mm2)


def test_real_slide_cmu_small_region_against_openslide_thumbnail() -> None:
    path = need(DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs")
    with open_slide(path) as s:
        tissue = detect_tissue(s)
    # 8 / 0.499 = 16.03 -> 16 x 16 blocks of level 0.
    assert tissue.downsample == 16.0
    assert tissue.mask.shape == (186, 139)
    # Independent reference: OpenSlide's own thumbnail of the same size, pixels
    # whose channel spread (max - min) exceeds 25 grey levels (glass is grey).
    reference = openslide.OpenSlide(str(path))
    thumb = np.asarray(reference.get_thumbnail((139, 186)).convert("RGB")).astype(int)
    reference.close()
    assert thumb.shape == (186, 139, 3)
    coloured = thumb.max(axis=-1) - thumb.min(axis=-1) > 25
    iou = (tissue.mask & coloured).sum() / (tissue.mask | coloured).sum()
    assert iou > 0.85
    assert not tissue.mask[:10, -10:].any()


def test_fluorescence_blob_on_dark_background_is_found_exactly() -> None:
    # Dark background with sensor noise (0-10), one bright 40 x 60 block at 120:
    # "auto" must switch to brightness and find exactly the block.
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 11, size=(120, 160, 3)).astype(np.uint8)
    rgb[30:70, 50:110, 0] = 120
    params = TissueParams()
    assert is_fluorescence(rgb, params)
    mask = tissue_mask_rgb(rgb, 8.0, params)
    expected = np.zeros((120, 160), bool)
    expected[30:70, 50:110] = True
    assert mask.sum() == 2400
    assert np.array_equal(mask, expected)


def test_fluorescence_ndpi_has_tissue() -> None:
    path = need(DATA / "slides" / "hamamatsu" / "test3-TRITC-2-560.ndpi")
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        thumb, _ = slide.thumbnail(TissueParams().target_mpp)
    assert is_fluorescence(thumb, TissueParams())
    # The TRITC signal is brighter than the dark background where tissue is: the
    # mask's mean brightness must exceed the rest's.
    bright = thumb.max(axis=2).astype(float)
    assert bright[tissue.mask].mean() > bright[~tissue.mask].mean() + 5
    assert 0 < tissue.mask.mean() < 1
