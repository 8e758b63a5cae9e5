"""Slide metrics against values worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsi_dram.errors import DataError
from wsi_dram.evaluation.slide_metrics import (
    bootstrap_auc_ci,
    froc_report,
    rates_at,
    roc_auc,
    roc_curve,
    slide_report,
    youden_threshold,
)

LABELS = [1, 1, 0, 0, 1, 0]
SCORES = [0.9, 0.5, 0.5, 0.1, 0.3, 0.7]


def test_auc_by_hand_with_a_tie() -> None:
    # Positives 0.9, 0.5, 0.3 against negatives 0.5, 0.1, 0.7:
    # 0.9 beats all 3; 0.5 ties 0.5 (1/2) and beats 0.1; 0.3 beats 0.1.
    # (3 + 1.5 + 1) / 9 = 11 / 18.
    assert roc_auc(LABELS, SCORES) == pytest.approx(11 / 18)


def test_auc_equals_the_pair_count_on_random_data() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    pairs = ((diff > 0) + 0.5 * (diff == 0)).mean()
    assert roc_auc(labels, scores) == pytest.approx(pairs)


def test_auc_matches_sklearn() -> None:
    from sklearn import metrics  # in the test extra: an independent AUC

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 100)
    scores = np.round(rng.random(100), 2)
    assert roc_auc(labels, scores) == pytest.approx(
        metrics.roc_auc_score(labels, scores)
    )


def test_roc_curve_points_and_trapezoid_area() -> None:
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    assert thresholds.tolist() == [np.inf, 0.9, 0.7, 0.5, 0.3, 0.1]
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(11 / 18)


def test_one_class_is_an_error() -> None:
    with pytest.raises(DataError, match="tumour and normal"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(DataError, match="0 \\(normal\\) or 1"):
        roc_auc([2, 0], [0.2, 0.3])


def test_bootstrap_is_stratified_and_seeded() -> None:
    # One tumour slide (0.5) and normals 0.2 and 0.8: a replicate draws two
    # normals, AUC 1 (both 0.2), 0.5 or 0 (both 0.8) with odds 1/4, 1/2, 1/4;
    # so the 95% interval is [0, 1]. Without stratification some replicates
    # would have no tumour slide at all.
    assert bootstrap_auc_ci([1, 0, 0], [0.5, 0.2, 0.8], n_bootstrap=500) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = labels * 0.3 + rng.random(60)
    first = bootstrap_auc_ci(labels, scores, n_bootstrap=300, seed=7)
    assert first == bootstrap_auc_ci(labels, scores, n_bootstrap=300, seed=7)
    assert first != bootstrap_auc_ci(labels, scores, n_bootstrap=300, seed=8)
    auc = roc_auc(labels, scores)
    assert first[0] < auc < first[1]


def test_perfect_separation_has_a_degenerate_interval() -> None:
    assert bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 200) == (1.0, 1.0)


def test_youden_threshold_by_hand() -> None:
    # t = 0.3: sensitivity 1, 1 - specificity 1/3, J = 2/3 (the best);
    # t = 0.6: J = 1/2; t = 0.4: J = 3/4 - 1/3.
    labels = [0, 0, 1, 1, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # The cut at 0.3 moves to the middle of the gap down to 0.2: 0.25.
    assert youden_threshold(labels, scores) == pytest.approx(0.25)
    # J ties at 0.3 and 0.6 (both 2/3): the higher cut is taken, then moved to
    # the middle of the gap down to 0.4: 0.5.
    tie = youden_threshold([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    assert tie == pytest.approx(0.5)
    # Perfect separation: halfway between the highest normal and lowest tumour.
    assert youden_threshold([0, 0, 1, 1], [0.3, 0.36, 0.9998, 1.0]) == pytest.approx(
        (0.36 + 0.9998) / 2
    )


def test_rates_at_threshold_by_hand() -> None:
    # score >= 0.5 -> called tumour: 0.9, 0.5 (tumour), 0.5, 0.7 (normal).
    rates = rates_at(LABELS, SCORES, 0.5)
    assert rates["accuracy"] == pytest.approx(3 / 6)
    assert rates["sensitivity"] == pytest.approx(2 / 3)
    assert rates["specificity"] == pytest.approx(1 / 3)


def test_slide_report_keys_and_threshold_choice() -> None:
    report = slide_report(LABELS, SCORES, n_bootstrap=100)
    assert {
        "auc",
        "auc_ci",
        "accuracy",
        "sensitivity",
        "specificity",
        "threshold",
        "n_slides",
    } <= set(report)
    assert report["auc"] == pytest.approx(11 / 18)
    assert report["threshold"] == 0.5
    assert report["threshold_method"] == "default-0.5"
    assert report["n_slides"] == 6
    assert report["auc_ci"][0] <= report["auc"] <= report["auc_ci"][1]

    fixed = slide_report(LABELS, SCORES, threshold=0.8, n_bootstrap=10)
    assert fixed["threshold_method"] == "fixed"
    assert fixed["sensitivity"] == pytest.approx(1 / 3)

    tuned = slide_report(
        LABELS,
        SCORES,
        n_bootstrap=10,
        validation=([0, 0, 1, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
    )
    # Cut 0.3 on the validation slides, moved halfway down to 0.2.
    assert tuned["threshold"] == pytest.approx(0.25)
    assert tuned["threshold_method"] == "youden-validation"
    json.dumps(report)


def test_slide_report_with_one_class_has_no_auc() -> None:
    report = slide_report([1, 1], [0.9, 0.2])
    assert report["auc"] is None and report["auc_ci"] is None
    assert report["sensitivity"] == 0.5 and report["specificity"] is None


def test_froc_report_keys() -> None:
    mask = np.zeros((80, 80), dtype=bool)
    mask[10:60, 10:60] = True
    from wsi_dram.evaluation.froc import evaluation_mask

    masks = {"t": evaluation_mask(mask), "n": None}
    detections = {
        "t": [(0.9, 35 * 32, 35 * 32), (0.6, 75 * 32, 75 * 32)],
        "n": [(0.8, 100, 100)],
    }
    report = froc_report(detections, masks)
    # FPs 0.6 and 0.8, lesion best 0.9; thresholds 0.8, 0.9:
    # t = 0.8: 1 FP / 2 slides, sens 1; t = 0.9: 0 FP, sens 1; end (0, 0).
    # Increasing x: (0, 0), (0, 1), (0.5, 1): every rate reads 1.
    assert report["froc"] == pytest.approx(1.0)
    assert report["froc_sensitivities"] == {
        r: 1.0 for r in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    }
    assert report["froc_n_lesions"] == 1 and report["froc_n_slides"] == 2
    assert json.loads(json.dumps(report))["froc_sensitivities"]["0.25"] == 1.0
