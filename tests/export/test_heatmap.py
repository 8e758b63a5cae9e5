"""Heatmap geometry: cells, sampling, polygons with holes (checked with shapely)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point, Polygon, box

from tests.export.conftest import HOT_BOX, SPOT, SPOT_P, SWAPPED
from wsi_dram.errors import DataError
from wsi_dram.export.heatmap import (
    Heatmap,
    colour_lut,
    colourize,
    heatmap_polygons,
    sample_grid,
)


def _grid(probs: np.ndarray, stride: float = 10, field: float = 10) -> Heatmap:
    h, w = probs.shape
    return Heatmap(
        probs, (0, 0), stride, field, int(w * stride), int(h * stride), 1.0, "g"
    )


def test_cell_origin_is_field_centre_minus_half_stride(wide_heatmap: Heatmap) -> None:
    assert wide_heatmap.cell_origin == (228.0, 188.0)
    centres = wide_heatmap.field_centres()
    assert centres.shape == (22, 76, 2)
    assert tuple(centres[8, 18]) == SPOT  # (x, y) of field row 8, col 18


def test_sample_grid_finds_spot_not_swapped(wide_heatmap: Heatmap) -> None:
    values = sample_grid(
        wide_heatmap, np.array([SPOT[0], SWAPPED[0]]), np.array([SPOT[1], SWAPPED[1]])
    )
    assert values[0, 0] == pytest.approx(SPOT_P)
    assert values[1, 1] == pytest.approx(0.1)
    # Outside the grid and in the unscored row: NaN.
    outside = sample_grid(
        wide_heatmap, np.array([19900.0, 300.0]), np.array([5950.0, 200.0])
    )
    assert np.isnan(outside[0, 0]) and np.isnan(outside[1, 1])


def test_polygon_of_hot_block(wide_heatmap: Heatmap) -> None:
    polygons = heatmap_polygons(wide_heatmap, 0.5)
    assert isinstance(polygons, MultiPolygon) and len(polygons.geoms) == 1
    assert polygons.symmetric_difference(box(*HOT_BOX)).area == pytest.approx(0.0)
    assert polygons.contains(Point(SPOT)) and not polygons.contains(Point(SWAPPED))
    # Collinear vertices are merged: a rectangle has 4 corners (+ closing point).
    assert len(polygons.geoms[0].exterior.coords) == 5


def test_polygons_keep_holes_islands_and_corner_touching_parts() -> None:
    probs = np.zeros((7, 7), dtype=np.float32)
    probs[1:6, 1:6] = 0.8  # ring ...
    probs[2:5, 2:5] = 0.2  # ... around a hole ...
    probs[3, 3] = 0.9  # ... with an island in it
    probs[6, 6] = 0.7  # touches the ring only at a corner
    polygons = heatmap_polygons(_grid(probs), 0.5)
    ring = Polygon(
        [(10, 10), (60, 10), (60, 60), (10, 60)],
        [[(20, 20), (50, 20), (50, 50), (20, 50)]],
    )
    expected = ring.union(box(30, 30, 40, 40)).union(box(60, 60, 70, 70))
    assert polygons.symmetric_difference(expected).area == pytest.approx(0.0)
    assert len(polygons.geoms) == 3
    assert sum(len(p.interiors) for p in polygons.geoms) == 1
    assert polygons.area == pytest.approx(16 * 100 + 100 + 100)


def test_threshold_is_inclusive_and_nan_never_counts() -> None:
    probs = np.array([[0.5, np.nan], [0.49, 1.0]], dtype=np.float32)
    polygons = heatmap_polygons(_grid(probs), 0.5)
    assert polygons.area == pytest.approx(200)
    assert heatmap_polygons(_grid(probs), 1.01).is_empty
    assert heatmap_polygons(_grid(np.full((2, 2), np.nan, np.float32)), 0.0).is_empty


def test_polygons_clipped_to_slide() -> None:
    # Stride 100 > field 20: cell (0, 0) spans [-40, 60), clipped to [0, 60).
    probs = np.ones((1, 1), dtype=np.float32)
    heat = Heatmap(probs, (0, 0), 100, 20, 50, 50, 1.0, "c")
    assert heatmap_polygons(heat, 0.5).symmetric_difference(box(0, 0, 50, 50)).area == 0


def test_colourize_uses_lut_and_background() -> None:
    lut = colour_lut("viridis")
    rgb = colourize(np.array([[0.0, 1.0, np.nan]]), "viridis", background=(1, 2, 3))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert tuple(rgb[0, 0]) == tuple(lut[0]) and tuple(rgb[0, 1]) == tuple(lut[255])
    assert tuple(rgb[0, 2]) == (1, 2, 3)
    assert tuple(lut[255]) == (253, 231, 37)  # viridis' yellow end, by hand


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probabilities": np.zeros(3)},
        {"stride": 0},
        {"probabilities": np.full((2, 2), 1.5)},
        {"mpp": 0.0},
    ],
)
def test_bad_heatmap_is_a_data_error(kwargs: dict) -> None:
    args = {
        "probabilities": np.zeros((2, 2)),
        "origin": (0, 0),
        "stride": 10,
        "field_size": 10,
        "width": 20,
        "height": 20,
        "mpp": 0.5,
        "slide_id": "bad",
    }
    args.update(kwargs)
    with pytest.raises(DataError, match="bad"):
        Heatmap(**args)
