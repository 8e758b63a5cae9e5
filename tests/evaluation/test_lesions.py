"""Lesion candidates from a heatmap and the detection CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_dram.errors import DataError
from wsi_dram.evaluation.lesions import (
    lesions_from_heatmap,
    lesions_from_points,
    read_detections_csv,
    write_detections_csv,
)


def test_peaks_in_level0_pixels_by_decreasing_confidence() -> None:
    prob = np.zeros((6, 8), dtype=np.float32)
    prob[1, 1] = 0.9
    prob[1, 2] = 0.6  # next to the 0.9 peak: suppressed
    prob[4, 6] = 0.7
    prob[4, 0] = 0.4  # below the threshold
    prob[0, 7] = np.nan
    out = lesions_from_heatmap(
        prob, origin_xy=(1000, 2000), stride=256, threshold=0.5, min_distance=1
    )
    # Cell (r, c) centre: x = 1000 + (c + 0.5) * 256, y = 2000 + (r + 0.5) * 256.
    assert out == [
        (pytest.approx(0.9), 1000 + 384, 2000 + 384),
        (pytest.approx(0.7), 1000 + 1664, 2000 + 1152),
    ]


def test_min_distance_zero_keeps_every_cell_above_threshold() -> None:
    prob = np.array([[0.6, 0.8], [0.1, 0.55]])
    out = lesions_from_heatmap(prob, (0, 0), 10, threshold=0.5, min_distance=0)
    assert [c for c, _, _ in out] == pytest.approx([0.8, 0.6, 0.55])
    assert [(x, y) for _, x, y in out] == [(15, 5), (5, 5), (15, 15)]


def test_suppression_radius_in_cells() -> None:
    prob = np.zeros((1, 10))
    prob[0, 2] = 0.9
    prob[0, 5] = 0.8  # 3 cells away
    assert len(lesions_from_heatmap(prob, (0, 0), 1, 0.5, min_distance=2)) == 2
    assert len(lesions_from_heatmap(prob, (0, 0), 1, 0.5, min_distance=3)) == 1


def test_plateau_gives_one_candidate() -> None:
    prob = np.zeros((5, 5))
    prob[1:4, 1:4] = 1.0
    out = lesions_from_heatmap(prob, (0, 0), 2, 0.5, min_distance=2)
    assert out == [(1.0, 3, 3)]  # the first cell in row order, (1, 1)


def test_all_nan_heatmap_gives_nothing() -> None:
    assert lesions_from_heatmap(np.full((3, 3), np.nan), (0, 0), 1, 0.5) == []


def test_csv_round_trip_and_header(tmp_path: Path) -> None:
    path = write_detections_csv(
        tmp_path / "test_001.csv", [(0.75, 1234.6, 99), (0.5, 10, 20)]
    )
    assert path.read_text().splitlines() == ["0.75,1234,99", "0.5,10,20"]
    assert read_detections_csv(path) == [(0.75, 1234.0, 99.0), (0.5, 10.0, 20.0)]
    with_header = tmp_path / "h.csv"
    with_header.write_text("confidence,X,Y\n0.3,1,2\n\n")
    assert read_detections_csv(with_header) == [(0.3, 1.0, 2.0)]


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("0.3,1,2\n0.4,abc,5\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 2"):
        read_detections_csv(bad)
    with pytest.raises(DataError, match="not found"):
        read_detections_csv(tmp_path / "missing.csv")


def test_lesions_from_points_by_hand() -> None:
    conf = np.array([0.9, 0.6, 0.8, 0.4, 0.7])
    points = np.array([[0, 0], [30, 40], [200, 0], [0, 0], [10.7, -0.5]])
    # 0.9 at (0, 0) kept; 0.8 at (200, 0) is 200 px away, kept; 0.7 at
    # (10.7, -0.5) lies 10.7 px from (0, 0), merged; 0.6 at (30, 40) exactly
    # 50 px away, merged (within the radius); 0.4 under the threshold.
    assert lesions_from_points(conf, points, 0.5, radius=50) == [
        (0.9, 0, 0),
        (0.8, 200, 0),
    ]
    # radius 0 keeps every candidate, floors the coordinates
    assert lesions_from_points(conf, points, 0.5, radius=0) == [
        (0.9, 0, 0),
        (0.8, 200, 0),
        (0.7, 10, -1),
        (0.6, 30, 40),
    ]
    assert lesions_from_points(np.zeros(0), np.zeros((0, 2)), 0.5, 10) == []
    with pytest.raises(ValueError, match="one each"):
        lesions_from_points(conf[:2], points, 0.5)


def test_candidates_outside_the_slide_are_clamped_into_it() -> None:
    from wsi_dram.evaluation.scoring import SlideScores

    # A 4096 x 4096 slide. Field 0 (no evidence glimpse) is centred at
    # (1072 + 1024, -1040 + 1024) = (2096, -16); field 1's evidence glimpse (the
    # second) is at (4200.5, 100.7); field 2's at (10.2, 20.9), inside.
    scores = SlideScores(
        slide_id="s",
        width=4096,
        height=4096,
        mpp=0.5,
        probabilities=np.full((1, 1), np.nan, np.float32),
        origin=(0, 0),
        stride=2048,
        field_size=2048,
        fields=np.array([[1072, -1040, 2048], [3000, 0, 2048], [0, 0, 2048]]),
        field_probabilities=np.array([0.468781, 0.9, 0.6], np.float32),
        glimpses=np.array(
            [
                [[0.0, 0.0], [0.0, 0.0]],
                [[3500.0, 50.0], [4200.5, 100.7]],
                [[10.2, 20.9], [5.0, 5.0]],
            ]
        ),
        evidence=np.array([-1, 1, 0]),
        glimpse_side=64,
        pixels_read=0,
        tissue_pixels=1,
        score=0.9,
        aggregate="max",
        top_k=3,
        policy="learned",
    )
    found = scores.lesions(threshold=0.4, merge_um=10.0)
    assert [(round(c, 6), x, y) for c, x, y in found] == [
        (0.9, 4095, 100),
        (0.6, 10, 20),
        (0.468781, 2096, 0),
    ]
    # Without a slide size the raw (floored) points come back.
    raw = lesions_from_points(
        np.array([0.5]), np.array([[3120.0, -16.0]]), threshold=0.4
    )
    assert raw == [(0.5, 3120, -16)]
    assert lesions_from_points(
        np.array([0.5]), np.array([[3120.0, -16.0]]), 0.4, size_xy=(4096, 4096)
    ) == [(0.5, 3120, 0)]


def test_heatmap_candidates_outside_the_slide_are_clamped_into_it() -> None:
    from wsi_dram.export.heatmap import Heatmap
    from wsi_dram.export.lesions import heatmap_lesions

    # Fields of 2048 px every 1024 px from (-2048, 3600): the cells are the
    # central 1024 px, from (-1536, 4112); cell centres at y = 4624 and
    # x = -1024 (col 0), 2048 (col 3); both below a 4096 x 4096 slide.
    probs = np.array([[0.9, np.nan, np.nan, 0.7]], np.float32)
    heat = Heatmap(probs, (-2048, 3600), 1024, 2048, 4096, 4096, 0.5, "s")
    assert lesions_from_heatmap(probs, heat.cell_origin, 1024) == [
        (pytest.approx(0.9), -1024, 4624),
        (pytest.approx(0.7), 2048, 4624),
    ]
    found = heatmap_lesions(heat, threshold=0.5)
    assert [(x, y) for _, x, y in found] == [(0, 4095), (2048, 4095)]
