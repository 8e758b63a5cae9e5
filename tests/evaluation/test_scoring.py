"""score_slide: grid placement, probabilities in the right cells, pixels read."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.data.slide_cohort import SlideCohort, slide_cohort  # noqa: F401
from wsi_dram.cache.store import open_cache
from wsi_dram.evaluation.scoring import (
    ScoringOptions,
    aggregate_scores,
    field_grid,
    score_slide,
    tissue_bbox,
    tissue_pixels_read,
)
from wsi_dram.model.dram import DramOutput, ModelConfig


class StubModel(nn.Module):
    """Reads one glimpse at each field's centre; P(tumour) = 0.1 + 0.8 x / width.

    ``x`` is the field's centre in level-0 px, so every cell's probability can be
    worked out from the grid alone.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.config = ModelConfig(glimpses=1, glimpse_size=16, scales=2, context_size=8)
        self.width = width
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, sensor: Any, sample: bool = False, **_: Any) -> DramOutput:
        b = sensor.batch_size
        loc = torch.zeros(b, 2)
        sensor.read(loc)
        centre = sensor.fields[:, 0] + sensor.fields[:, 2] / 2
        p = torch.as_tensor(0.1 + 0.8 * centre / self.width, dtype=torch.float32)
        logits = torch.stack([torch.log(1 - p), torch.log(p)], dim=1)
        empty = torch.zeros(b, 0)
        return DramOutput(logits, empty, empty, loc[:, None, :])


def test_field_grid_by_hand() -> None:
    # Box 1000 x 500 at (100, 200), fields 400 px every 400 px:
    # 3 columns spanning 1200 px -> origin x = 100 - 100; 2 rows spanning 800 px
    # -> origin y = 200 - 150.
    assert field_grid((100, 200, 1100, 700), 400, 400) == ((0, 50), 2, 3)
    # A box smaller than one field: one field centred on it.
    assert field_grid((100, 100, 300, 200), 400, 400) == ((0, -50), 1, 1)
    # Overlapping fields (stride 200): 1 + ceil(600 / 200) = 4 columns.
    assert field_grid((100, 200, 1100, 700), 400, 200)[2] == 4


def test_aggregate_scores_by_hand() -> None:
    p = np.array([[0.2, np.nan], [0.9, 0.5]])
    assert aggregate_scores(p, "max") == pytest.approx(0.9)
    assert aggregate_scores(p, "topk", 2) == pytest.approx(0.7)
    assert aggregate_scores(p, "topk", 10) == pytest.approx((0.2 + 0.9 + 0.5) / 3)
    assert aggregate_scores(np.full((2, 2), np.nan), "max") == 0.0


def _mask_level0(slide: Any) -> np.ndarray:
    mask, d = slide.tissue_mask()
    full = np.kron(mask.astype(np.uint8), np.ones((int(d), int(d)), np.uint8))
    return full[: slide.height, : slide.width]


def test_tissue_pixels_read_counts_distinct_tissue_pixels(
    slide_cohort: SlideCohort,  # noqa: F811
) -> None:
    slide = open_cache(slide_cohort.cache / f"{slide_cohort.ids[0]}.ome.zarr")
    full = _mask_level0(slide)
    ys, xs = np.nonzero(full)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    boxes = np.array(
        [
            [x - 8, y - 8, x + 8, y + 8],
            [x - 4, y - 8, x + 12, y + 8],  # overlaps the first by 12 x 16
            [-20, -20, 12, 12],  # partly outside the slide
        ]
    )
    union = np.zeros_like(full, bool)
    for x0, y0, x1, y1 in boxes:
        union[max(y0, 0) : y1, max(x0, 0) : x1] = True
    assert tissue_pixels_read(slide, boxes) == int((union & (full > 0)).sum())


@pytest.mark.parametrize("stride", [512, 384])
def test_score_slide_places_probabilities_in_their_cells(
    slide_cohort: SlideCohort,  # noqa: F811
    stride: int,
) -> None:
    slide = open_cache(slide_cohort.cache / f"{slide_cohort.ids[1]}.ome.zarr")
    options = ScoringOptions(
        field_size=512, stride=stride, min_tissue=0.2, batch_size=5
    )
    scores = score_slide(StubModel(slide.width), slide, options)

    # Grid covers the tissue bounding box computed from the raw label.
    mask, d = slide.tissue_mask()
    rows_any, cols_any = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    bx0, bx1 = cols_any[0] * d, (cols_any[-1] + 1) * d
    by0, by1 = rows_any[0] * d, (rows_any[-1] + 1) * d
    rows, cols = scores.probabilities.shape
    ox, oy = scores.origin
    assert ox <= bx0 and ox + (cols - 1) * stride + 512 >= bx1
    assert oy <= by0 and oy + (rows - 1) * stride + 512 >= by1
    assert cols == 1 + math.ceil(max(0, bx1 - bx0 - 512) / stride)
    assert tissue_bbox(slide) == (
        bx0,
        by0,
        min(bx1, slide.width),
        min(by1, slide.height),
    )

    full = _mask_level0(slide)
    expected = np.full((rows, cols), np.nan)
    expected_read = 0
    for r in range(rows):
        for c in range(cols):
            x0, y0 = ox + c * stride, oy + r * stride
            share = full[max(y0, 0) : y0 + 512, max(x0, 0) : x0 + 512].sum() / 512**2
            if share >= 0.2:
                expected[r, c] = 0.1 + 0.8 * (x0 + 256) / slide.width
                # The glimpse window: 16 px around the centre (on the 2 px grid).
                cx, cy = x0 + 256, y0 + 256
                expected_read += int(full[cy - 8 : cy + 8, cx - 8 : cx + 8].sum())
    np.testing.assert_allclose(scores.probabilities, expected, rtol=1e-5)
    assert np.isnan(scores.probabilities).any()  # some fields are off tissue
    assert scores.score == pytest.approx(np.nanmax(expected), rel=1e-5)
    assert len(scores.fields) == int(np.isfinite(expected).sum())
    if stride == 512:  # windows of different fields never overlap
        assert scores.pixels_read == expected_read
    assert scores.tissue_pixels == int(full.sum())
    assert scores.pixels_read_fraction == scores.pixels_read / full.sum()
    # Glimpse centres are the field centres (l = (0, 0)).
    np.testing.assert_allclose(
        scores.glimpses[:, 0], scores.fields[:, :2] + 256, atol=1e-9
    )
    # The cell of field (r, c) is its central stride x stride square.
    shift = (512 - stride) / 2
    assert scores.cell_origin == (ox + shift, oy + shift)
    heatmap = scores.to_heatmap()
    assert heatmap.cell_origin == scores.cell_origin
    assert heatmap.score == scores.score


def test_whole_slide_scores_one_field(slide_cohort: SlideCohort) -> None:  # noqa: F811
    slide = open_cache(slide_cohort.cache / f"{slide_cohort.ids[0]}.ome.zarr")
    options = ScoringOptions(whole_slide=True)
    scores = score_slide(StubModel(slide.width), slide, options)
    assert scores.probabilities.shape == (1, 1)
    x0, y0, side = scores.fields[0].tolist()
    assert scores.field_size == scores.stride == side
    assert scores.score == pytest.approx(0.1 + 0.8 * (x0 + side / 2) / slide.width)


def test_options_from_config(slide_cohort: SlideCohort) -> None:  # noqa: F811
    from tests.data.slide_cohort import region_config
    from wsi_dram.errors import ConfigError
    from wsi_dram.evaluation.scoring import options_from_config
    from wsi_dram.training.config import TrainConfig

    config = region_config(slide_cohort, score_stride=256, aggregate="topk", top_k=2)
    options = options_from_config(config)
    assert (options.field_size, options.stride, options.aggregate) == (512, 256, "topk")
    assert options.top_k == 2 and not options.whole_slide
    config.task.kind = "slide"
    assert options_from_config(config).whole_slide
    with pytest.raises(ConfigError, match="not a slide task"):
        options_from_config(TrainConfig())


class TwoGlimpseStub(StubModel):
    """Two glimpses at (-0.5, -0.5) then (0.5, 0.25); p(tumour) is 0.2 after the
    first and the stub's field probability after the second: in fields whose
    probability ends above 0.2 the second glimpse found the evidence."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.config = ModelConfig(glimpses=2, glimpse_size=16, scales=2, context_size=8)

    def forward(self, sensor: Any, sample: bool = False, **_: Any) -> DramOutput:
        out = super().forward(sensor, sample)
        b = sensor.batch_size
        loc = torch.tensor([[-0.5, -0.5], [0.5, 0.25]]).expand(b, 2, 2)
        first = torch.log(torch.tensor([0.8, 0.2])).expand(b, 2)
        steps = torch.stack([first, out.logits], dim=1)  # (B, 2, 2)
        return DramOutput(out.logits, out.log_pi, out.baselines, loc, steps)


def test_lesions_sit_where_the_evidence_glimpse_looked(
    slide_cohort: SlideCohort,  # noqa: F811
) -> None:
    slide = open_cache(slide_cohort.cache / f"{slide_cohort.ids[1]}.ome.zarr")
    options = ScoringOptions(field_size=512, stride=512, min_tissue=0.2)
    scores = score_slide(TwoGlimpseStub(slide.width), slide, options)
    x0, y0 = scores.fields[:, 0], scores.fields[:, 1]
    p = 0.1 + 0.8 * (x0 + 256) / slide.width
    # rise of glimpse 0 is 0.2, of glimpse 1 is p - 0.2: the second wins when
    # p > 0.4; l = (0.5, 0.25) is (x0 + 384, y0 + 320), (-0.5, -0.5) (x0 + 128,
    # y0 + 128)
    second = p - 0.2 > 0.2
    assert second.any() and (~second).any()
    np.testing.assert_array_equal(scores.evidence, np.where(second, 1, 0))
    want = np.where(
        second[:, None],
        np.column_stack([x0 + 384, y0 + 320]),
        np.column_stack([x0 + 128, y0 + 128]),
    )
    np.testing.assert_allclose(scores.lesion_points(), want)
    # Fields are 512 px apart, so a merge distance under 256 px merges none.
    found = scores.lesions(0.5, merge_um=100 * slide.mpp)
    keep = p >= 0.5
    assert keep.any()
    assert sorted(found) == sorted(
        (float(np.float32(q)), int(x), int(y))
        for q, (x, y) in zip(p[keep], want[keep], strict=True)
    )
