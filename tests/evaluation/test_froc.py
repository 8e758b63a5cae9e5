"""FROC port: evaluation masks and scores worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from wsi_dram.errors import DataError
from wsi_dram.evaluation.froc import (
    EvaluationMask,
    SlideLesions,
    evaluate_froc,
    evaluation_mask,
    evaluation_mask_from_geometry,
    froc_curve,
    growth_threshold_px,
    itc_threshold_px,
    rasterize_geometry,
    score_slide,
    sensitivity_at,
)

# mpp for which the growth threshold is exactly 1 level-5 pixel: the mask is not
# grown at all (distance < 1 only on tumour) and the ITC limit is 7.333 px.
NO_GROWTH_MPP = 75 / (2**5 * 2 * 1.0)


def px(row: int, col: int, level: int = 5) -> tuple[float, float]:
    """Level-0 (x, y) at the centre of evaluation pixel (row, col)."""
    scale = 2**level
    return col * scale + scale / 2, row * scale + scale / 2


def det(confidence: float, row: int, col: int) -> tuple[float, float, float]:
    x, y = px(row, col)
    return (confidence, x, y)


def test_thresholds_are_the_organisers_formulas() -> None:
    # 75 / (0.243 * 32 * 2) and 275 / (0.243 * 32), worked out by hand.
    assert growth_threshold_px(0.243, 5) == pytest.approx(4.8225308642)
    assert itc_threshold_px(0.243, 5) == pytest.approx(35.3652263374)
    assert growth_threshold_px(NO_GROWTH_MPP, 5) == 1.0


@pytest.mark.parametrize(("gap", "merged"), [(8, True), (9, False)])
def test_growth_joins_blobs_closer_than_twice_the_threshold(
    gap: int, merged: bool
) -> None:
    # A gap pixel k columns from the left blob is min(k, gap + 1 - k) from
    # tumour; the middle of a gap of 8 is 4 < 4.82 away, of 9 it is 5 > 4.82.
    mask = np.zeros((60, 120), dtype=bool)
    mask[20:40, 20:50] = True
    mask[20:40, 50 + gap : 80 + gap] = True
    labels = evaluation_mask(mask).labels
    assert labels.max() == (1 if merged else 2)


def test_growth_is_strictly_below_the_threshold() -> None:
    # mpp chosen so the threshold is exactly 4.0: a distance of 4 is not inside.
    mpp = 75 / (2**5 * 2 * 4.0)
    mask = np.zeros((60, 120), dtype=bool)
    mask[20:40, 20:50] = True
    mask[20:40, 57:87] = True  # gap of 7: middle pixel exactly 4 from both
    assert evaluation_mask(mask, mpp=mpp).labels.max() == 2
    mask[20:40, 50:57] = False
    mask[20:40, 56:86] = True  # gap of 6: at most 3 from tumour
    assert evaluation_mask(mask, mpp=mpp).labels.max() == 1


def test_band_of_the_grown_lesion_counts_as_the_lesion() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:70, 20:70] = True
    ev = evaluation_mask(mask)
    # Column 73 is 4 px from the last tumour column 69 (< 4.82): inside.
    assert ev.labels[45, 73] == 1
    # Column 74 is 5 px away: outside.
    assert ev.labels[45, 74] == 0
    result = score_slide([det(0.7, 45, 73), det(0.6, 45, 74)], ev)
    assert result.lesion_confidences.tolist() == [0.7]
    assert result.fp_confidences.tolist() == [0.6]


def test_holes_are_filled_and_labels_are_8_connected() -> None:
    ring = np.zeros((40, 40), dtype=bool)
    ring[10:30, 10:30] = True
    ring[13:27, 13:27] = False
    ev = evaluation_mask(ring, mpp=NO_GROWTH_MPP)
    assert ev.labels.max() == 1
    assert ev.labels[20, 20] == 1  # the hole belongs to the lesion

    diagonal = np.zeros((40, 40), dtype=bool)
    diagonal[5:15, 5:15] = True
    diagonal[15:25, 15:25] = True  # touches the first only at a corner
    assert evaluation_mask(diagonal, mpp=NO_GROWTH_MPP).labels.max() == 1


def test_itc_rule_uses_the_major_axis() -> None:
    # Without growth the ITC limit is 275 / (mpp * 32) = 7.333 px. A 1 x w bar
    # has major axis 4 * sqrt((w**2 - 1) / 12): 8.0 for w = 7, 6.83 for w = 6.
    mask = np.zeros((20, 40), dtype=bool)
    mask[5, 2:9] = True  # w = 7, lesion
    mask[12, 20:26] = True  # w = 6, ITC
    ev = evaluation_mask(mask, mpp=NO_GROWTH_MPP)
    assert ev.labels.max() == 2
    itc = ev.labels[12, 20]
    assert ev.itc_labels == frozenset({int(itc)})
    assert ev.n_lesions == 1


def test_empty_mask_has_no_lesion() -> None:
    ev = evaluation_mask(np.zeros((10, 10), dtype=np.uint8))
    assert ev.max_label == 0 and ev.n_lesions == 0
    result = score_slide([det(0.5, 2, 2)], ev)
    assert result.fp_confidences.tolist() == [0.5]


def test_label_lookup_truncates_and_treats_outside_as_background() -> None:
    labels = np.zeros((4, 4), dtype=np.int32)
    labels[1, 2] = 3
    ev = EvaluationMask(labels, frozenset(), level=5)
    assert ev.label_at(2 * 32, 1 * 32) == 3
    assert ev.label_at(2 * 32 + 31.9, 1 * 32 + 31.9) == 3
    assert ev.label_at(3 * 32, 1 * 32) == 0
    assert ev.label_at(-1, 40) == 0
    assert ev.label_at(4 * 32, 0) == 0  # beyond the mask: no crash


def _paper_cohort() -> tuple[dict, dict]:
    # Slide A: a 50 x 50 lesion and a one-pixel ITC (grown to a disc of
    # radius < 4.82 px, major axis about 9 px < 35.4 px).
    a = np.zeros((200, 200), dtype=bool)
    a[20:70, 20:70] = True
    a[150, 150] = True
    # Slide B: one 40 x 40 lesion.
    b = np.zeros((200, 200), dtype=bool)
    b[100:140, 30:70] = True
    masks = {"a": evaluation_mask(a), "b": evaluation_mask(b), "c": None}
    detections = {
        "a": [
            det(0.9, 45, 45),  # hit of lesion 1
            det(0.6, 30, 60),  # second hit of lesion 1: ignored
            det(0.8, 150, 150),  # on the ITC: neither TP nor FP
            det(0.7, 180, 20),  # FP
            det(0.3, 100, 180),  # FP
        ],
        "b": [det(0.5, 120, 50), det(0.4, 10, 180)],  # hit, FP
        "c": [det(0.95, 50, 50), det(0.2, 120, 50)],  # normal slide: both FP
    }
    return detections, masks


def test_paper_cohort_masks() -> None:
    _, masks = _paper_cohort()
    assert masks["a"].max_label == 2 and masks["a"].n_lesions == 1
    assert masks["a"].labels[150, 150] in masks["a"].itc_labels
    assert masks["b"].max_label == 1 and masks["b"].n_lesions == 1


def test_froc_worked_out_on_paper() -> None:
    # FP confidences 0.7, 0.3, 0.4, 0.95, 0.2; lesion bests 0.9 and 0.5 (the ITC
    # keeps 0). Thresholds = distinct values without the smallest (0):
    #   t     0.2  0.3  0.4  0.5  0.7  0.9  0.95  (end)
    #   FPs   5    4    3    2    2    1    1     0     / 3 slides
    #   TPs   2    2    2    2    1    1    0     0     / 2 lesions
    # Read by increasing FP/slide: (0,0) (1/3,0) (1/3,.5) (2/3,.5) (2/3,1)
    # (1,1) (4/3,1) (5/3,1): at 1/4 -> 0, 1/2 -> 0.5, 1 and above -> 1.
    detections, masks = _paper_cohort()
    result = evaluate_froc(detections, masks)
    np.testing.assert_allclose(
        result.fps_per_slide, [5 / 3, 4 / 3, 1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0]
    )
    np.testing.assert_allclose(result.sensitivity, [1, 1, 1, 1, 0.5, 0.5, 0, 0])
    assert result.sensitivities == pytest.approx(
        {0.25: 0.0, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    )
    assert result.froc == pytest.approx(4.5 / 6)
    assert result.n_slides == 3
    assert result.n_lesions == 2
    assert result.n_false_positives == 5

    by_id = {r.slide_id: r for r in result.per_slide}
    assert by_id["a"].n_itc_hits == 1
    assert by_id["a"].hits[1] == det(0.9, 45, 45)  # the duplicate did not win
    assert sorted(by_id["c"].fp_confidences.tolist()) == [0.2, 0.95]


def test_duplicate_hits_count_once_and_the_best_wins() -> None:
    # 40 x 40 px (a 20 x 20 lesion would be an ITC: grown, its axis is < 35.4).
    mask = np.zeros((60, 60), dtype=bool)
    mask[10:50, 10:50] = True
    ev = evaluation_mask(mask)
    result = score_slide([det(0.4, 15, 15), det(0.8, 20, 20), det(0.6, 25, 25)], ev)
    assert result.lesion_confidences.tolist() == [0.8]
    assert result.fp_confidences.size == 0
    fps, sens = froc_curve([result])
    # The organisers drop the smallest distinct value as a threshold: with the
    # single value 0.8 the curve is only the closing point (0, 0).
    assert fps.tolist() == [0.0] and sens.tolist() == [0.0]


def test_normal_slide_detections_are_all_false_positives() -> None:
    result = score_slide([(0.9, 10, 10), (0.1, 1e6, 1e6)], None, "normal_001")
    assert sorted(result.fp_confidences.tolist()) == [0.1, 0.9]
    assert result.n_lesions == 0


def test_detections_for_an_unknown_slide_are_refused() -> None:
    with pytest.raises(DataError, match="without a reference"):
        evaluate_froc({"x": [(0.5, 1, 1)]}, {"a": None})


def test_negative_confidence_is_refused() -> None:
    with pytest.raises(DataError, match="confidence"):
        score_slide([(-0.1, 1.0, 1.0)], None, "s")


def test_cohort_without_lesions_has_undefined_sensitivity() -> None:
    result = evaluate_froc({"c": [(0.5, 1, 1)]}, {"c": None})
    assert math.isnan(result.froc)


def test_geometry_rasterised_at_pixel_centres_matches_the_array_path() -> None:
    # Level-5 pixel centres are at 16 + 32 k. The box x 320..640, y 64..192
    # covers centres of columns 10..19 and rows 2..5; the hole x 416..480,
    # y 96..160 removes columns 13..14 and rows 3..4.
    outer = box(320, 64, 640, 192)
    geometry = outer.difference(box(416, 96, 480, 160))
    raster = rasterize_geometry(geometry, (1000, 700), level=5)
    expected = np.zeros((math.ceil(700 / 32), math.ceil(1000 / 32)), dtype=bool)
    expected[2:6, 10:20] = True
    expected[3:5, 13:15] = False
    np.testing.assert_array_equal(raster, expected)

    ev_geom = evaluation_mask_from_geometry(geometry, (1000, 700))
    ev_array = evaluation_mask(expected)
    np.testing.assert_array_equal(ev_geom.labels, ev_array.labels)
    assert ev_geom.itc_labels == ev_array.itc_labels


def test_multipolygon_and_empty_geometry() -> None:
    geometry = shapely.MultiPolygon([box(0, 0, 64, 64), box(640, 640, 704, 704)])
    raster = rasterize_geometry(geometry, (1024, 1024), level=5)
    assert raster.sum() == 4 + 4
    assert not rasterize_geometry(None, (100, 100)).any()
    assert evaluation_mask_from_geometry(shapely.Polygon(), (100, 100)).max_label == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]), max_size=6),
            st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.9]), max_size=4),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_reading_matches_numpy_interp_on_the_reversed_curve(slides: list) -> None:
    # The organisers read the curve with numpy.interp on reversed arrays; our
    # explicit reading must agree, ties in FP/slide included.
    results = [
        SlideLesions(f"s{i}", np.array(fps), np.array(tps), max(len(tps), 1))
        for i, (fps, tps) in enumerate(slides)
    ]
    fps, sens = froc_curve(results)
    rates = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0]
    ours = sensitivity_at(fps, sens, rates)
    theirs = np.interp(rates, fps[::-1], sens[::-1])
    np.testing.assert_allclose(ours, theirs)


@pytest.mark.realdata
def test_real_camelyon16_annotation_against_an_independent_rasteriser() -> None:
    # test_040.xml (official CAMELYON16 lesion annotation, _0 tumour minus _2
    # exclusions). PIL's scan-line polygon fill, ring by ring, is an
    # independent rasteriser.
    from PIL import Image, ImageDraw

    from tests.conftest import DATA, need
    from wsi_dram.slides.annotations import read_annotations

    xml = need(DATA / "annotations" / "camelyon16" / "test_040.xml")
    tumour = read_annotations(xml).tumor
    size = (76000, 107000)  # covers the annotation bbox (to 75056, 106328)
    ours = rasterize_geometry(tumour, size, level=5)

    reference = np.zeros_like(ours)
    for part in tumour.geoms:
        canvas = Image.new("1", (ours.shape[1], ours.shape[0]), 0)
        draw = ImageDraw.Draw(canvas)
        rings = [(part.exterior, 1)] + [(r, 0) for r in part.interiors]
        for ring, value in rings:
            xy = [(x / 32 - 0.5, y / 32 - 0.5) for x, y in ring.coords]
            draw.polygon(xy, fill=value)
        reference |= np.asarray(canvas, dtype=bool)
    # Pixel-centre sampling keeps the area: 361,017 px against the exact
    # 369,648,198 / 32**2 = 360,985 px of the geometry.
    assert np.count_nonzero(ours) == pytest.approx(tumour.area / 32**2, rel=1e-3)
    # PIL also paints each ring's outline, so it differs on boundary pixels only.
    differing = np.count_nonzero(ours != reference)
    assert differing <= 0.03 * np.count_nonzero(reference)

    ev_ours = evaluation_mask(ours)
    ev_ref = evaluation_mask(reference)
    assert ev_ours.max_label == ev_ref.max_label > 0
    assert len(ev_ours.itc_labels) == len(ev_ref.itc_labels)
