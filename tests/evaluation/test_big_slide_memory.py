"""Scoring a big slide in bounded memory: pixels read, label sums, FROC mask.

Each function is checked against a plain whole-array computation, and its peak
of traced allocations against a bound the whole-array way would exceed (on a
100k px slide: 1 GB listing the cells read, 447 MB summing a label raster,
326 MB for the evaluation mask's distance transform).
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from wsi_dram.data.slide_tasks import _Integral
from wsi_dram.evaluation.froc import evaluation_mask, growth_threshold_px
from wsi_dram.evaluation.scoring import tissue_pixels_read


@dataclass
class MaskSlide:
    """The part of a cached slide that tissue_pixels_read uses."""

    width: int
    height: int
    mask: np.ndarray  # (h, w) bool tissue label
    d: float  # level-0 px per label px

    def tissue_mask(self) -> tuple[np.ndarray, float]:
        return self.mask, self.d


@pytest.mark.parametrize("block", [3, 7, 1024])
def test_count_is_the_level0_union_for_any_block(block: int) -> None:
    rng = np.random.default_rng(3)
    width, height, d = 1000, 700, 16
    mask = rng.random((-(-height // d), -(-width // d))) < 0.5
    slide = MaskSlide(width, height, mask, d)
    # Edges on a 4 px grid (so cells are 4 px); some windows leave the slide.
    x0 = rng.integers(-10, 255, 60) * 4
    y0 = rng.integers(-10, 180, 60) * 4
    side = rng.integers(1, 20, (60, 2)) * 4
    boxes = np.column_stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]])

    full = np.kron(mask, np.ones((d, d), bool))[:height, :width]
    union = np.zeros((height, width), bool)
    for a, b, c, e in boxes:
        union[max(b, 0) : max(e, 0), max(a, 0) : max(c, 0)] = True
    assert tissue_pixels_read(slide, boxes) == int((union & full).sum())
    assert tissue_pixels_read(slide, boxes, block) == int((union & full).sum())


def test_memory_does_not_grow_with_the_cells_read() -> None:
    # 20,000 glimpse windows of 32 x 32 px at 1 px offsets over 8k x 8k px of a
    # 100k px slide: 20.5 M cells under windows. Listing them (8 bytes each)
    # takes 164 MB; painting them block by block, a few 1024 x 1024 bitmaps.
    rng = np.random.default_rng(0)
    mask = np.ones((6250, 6250), bool)
    slide = MaskSlide(100_000, 100_000, mask, 16.0)
    origins = rng.integers(40_000, 48_000, (20_000, 2))
    boxes = np.column_stack([origins, origins + 32])
    tracemalloc.start()
    try:
        count = tissue_pixels_read(slide, boxes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    union = np.zeros((8_032, 8_032), bool)
    for x, y in origins - 40_000:
        union[y : y + 32, x : x + 32] = True
    assert count == int(union.sum())
    assert peak < 64 * 2**20


def _traced_peak(f, *args):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        out = f(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_label_sums_are_exact_and_need_only_their_table() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((3000, 2000)) < 0.3
    table, peak = _traced_peak(_Integral, mask, 4.0)
    boxes = np.array([[0, 0, 8000, 12000], [40, 80, 400, 1000], [-8, -8, 4, 4]])
    expected = [mask.sum(), mask[20:250, 10:100].sum(), mask[:1, :1].sum()]
    assert table.count(boxes).tolist() == expected
    # The int32 table is 24 MB; summing through temporaries took 3x that.
    assert peak < 1.2 * table.table.nbytes


def _whole_mask_reference(tumour: np.ndarray, mpp: float) -> np.ndarray:
    distance = ndimage.distance_transform_edt(~tumour)
    filled = ndimage.binary_fill_holes(distance < growth_threshold_px(mpp, 5))
    return measure.label(filled, connectivity=2)


@pytest.mark.parametrize("mpp", [0.243, 0.5, 2.0])
def test_evaluation_mask_is_the_whole_mask_one(mpp: float) -> None:
    tumour = np.zeros((300, 400), bool)
    tumour[0:6, 390:400] = True  # in a corner
    tumour[100:140, 100:140] = True
    tumour[110:130, 110:130] = False  # a hole
    tumour[150, 200] = True  # near the block above: joins it when grown
    tumour[250:260, 30:33] = True
    ev = evaluation_mask(tumour, mpp=mpp)
    assert np.array_equal(ev.labels, _whole_mask_reference(tumour, mpp))


def test_evaluation_mask_of_a_small_tumour_on_a_big_slide() -> None:
    tumour = np.zeros((3125, 3125), bool)  # level 5 of a 100k px slide
    tumour[1500:1540, 2000:2030] = True
    ev, peak = _traced_peak(evaluation_mask, tumour, 0.5)
    assert ev.labels.max() == 1 and ev.labels[1520, 2015] == 1
    # The int32 labels (39 MB) and a box around the tumour; not a float64
    # distance transform and its index arrays of the whole mask.
    assert peak < 1.5 * ev.labels.nbytes
