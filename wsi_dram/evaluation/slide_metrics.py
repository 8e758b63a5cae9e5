"""Slide-level metrics: ROC AUC with a bootstrap interval, thresholded rates, FROC keys.

Labels are 1 (tumour) and 0 (normal); scores are the slide's tumour score (any
real number, higher means more likely tumour). A slide is called tumour when
its score is at or above the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wsi_dram.errors import DataError
from wsi_dram.evaluation.froc import (
    FROC_RATES,
    Detection,
    EvaluationMask,
    evaluate_froc,
)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def _check(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise DataError(
            f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError("slide labels must be 0 (normal) or 1 (tumour)")
    if not np.isfinite(s).all():
        raise DataError("slide scores must be finite numbers")
    return y.astype(np.int64), s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of the last member of each distinct value
    mean_rank = ends - (counts - 1) / 2.0
    return mean_rank[inverse]


def roc_auc(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted one half).

    ``AUC = (R_pos - P (P + 1) / 2) / (P N)`` with ``R_pos`` the sum of the
    average ranks of the P positive scores among all P + N scores; equal to the
    share of (positive, negative) pairs ordered correctly, ties scoring 1/2.

    Raises:
        DataError: Only one class is present.
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"ROC AUC needs tumour and normal slides; got {n_pos} tumour, "
            f"{n_neg} normal"
        )
    rank_sum = float(_average_ranks(s)[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for every distinct score used as a threshold.

    Returns:
        ``(fpr, tpr, thresholds)``: thresholds decreasing, starting at +inf
        (nothing called tumour, the point (0, 0)) and ending at the lowest
        score (everything called tumour, (1, 1)).
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("ROC curve needs tumour and normal slides")
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    tpr = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / n_pos
    fpr = (len(neg) - np.searchsorted(neg, thresholds, side="left")) / n_neg
    return fpr, tpr, thresholds


def bootstrap_auc_ci(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling within each class.

    Each replicate draws P tumour slides from the P tumour slides and N normal
    slides from the N normal slides, with replacement, so every replicate has
    both classes and the class balance of the data.

    Returns:
        ``(low, high)``: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
        quantiles (linear interpolation) of the replicate AUCs.
    """
    y, s = _check(labels, scores)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise DataError("AUC interval needs tumour and normal slides")
    rng = np.random.default_rng(seed)
    labels_rep = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    aucs = np.empty(n_bootstrap, dtype=np.float64)
    for b in range(n_bootstrap):
        sample = np.concatenate(
            [
                pos[rng.integers(0, len(pos), len(pos))],
                neg[rng.integers(0, len(neg), len(neg))],
            ]
        )
        aucs[b] = roc_auc(labels_rep, sample)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(low), float(high)


def youden_threshold(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    Candidates are the distinct scores (a slide is tumour when score >=
    threshold); among equal J the highest candidate (fewest slides called tumour)
    is taken. The threshold returned is the midpoint between that candidate and
    the next lower score: the calls on these slides are the same, but the cut
    sits in the middle of the gap instead of on a validation score, where a test
    slide scored a hair lower would flip. Choose it on validation slides, never
    on the test set.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    j = tpr[1:] - fpr[1:]  # skip the +inf point
    # First maximum = highest threshold; J values equal up to rounding tie.
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])
    cut = float(thresholds[1:][best])
    below = np.asarray(scores, np.float64)
    below = below[below < cut]
    return cut if below.size == 0 else (cut + float(below.max())) / 2


def rates_at(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
) -> dict[str, float | None]:
    """Accuracy, sensitivity and specificity with ``score >= threshold`` = tumour.

    Sensitivity (specificity) is None when there is no tumour (normal) slide.
    """
    y, s = _check(labels, scores)
    called = s >= threshold
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    tp = int((called & (y == 1)).sum())
    tn = int((~called & (y == 0)).sum())
    return {
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "sensitivity": tp / n_pos if n_pos else None,
        "specificity": tn / n_neg if n_neg else None,
    }


def slide_report(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    threshold: float | None = None,
    validation: tuple[Sequence[int], Sequence[float]] | None = None,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The slide-level part of ``report.json``.

    Args:
        labels, scores: One entry per evaluated slide.
        threshold: A fixed threshold. When None: Youden's J on ``validation``
            if given, else 0.5.
        validation: ``(labels, scores)`` of validation slides for Youden's J.
        n_bootstrap, confidence, seed: The AUC interval (stratified bootstrap).

    Returns:
        ``auc``, ``auc_ci`` ([low, high]), ``accuracy``, ``sensitivity``,
        ``specificity``, ``threshold``, ``threshold_method`` ("fixed",
        "default-0.5" or "youden-validation"), ``n_slides``, ``n_tumor``,
        ``n_normal``. AUC values are None when a class is missing (logged).
    """
    y, s = _check(labels, scores)
    if threshold is not None:
        chosen, method = float(threshold), "fixed"
    elif validation is not None:
        chosen, method = youden_threshold(*validation), "youden-validation"
    else:
        chosen, method = DEFAULT_THRESHOLD, "default-0.5"

    n_pos = int(y.sum())
    auc: float | None = None
    auc_ci: list[float] | None = None
    if 0 < n_pos < len(y):
        auc = roc_auc(y, s)
        auc_ci = list(bootstrap_auc_ci(y, s, n_bootstrap, confidence, seed))
    else:
        log.warning(
            "AUC undefined: %d tumour and %d normal slides", n_pos, len(y) - n_pos
        )
    report: dict[str, Any] = {"auc": auc, "auc_ci": auc_ci}
    report.update(rates_at(y, s, chosen))
    report.update(
        threshold=chosen,
        threshold_method=method,
        n_slides=len(y),
        n_tumor=n_pos,
        n_normal=len(y) - n_pos,
    )
    return report


def froc_report(
    detections: Mapping[str, Sequence[Detection]],
    masks: Mapping[str, EvaluationMask | None],
    rates: Sequence[float] = FROC_RATES,
) -> dict[str, Any]:
    """The lesion-level part of ``report.json`` (see :func:`evaluate_froc`).

    Returns:
        ``froc`` (mean sensitivity, None when undefined), ``froc_sensitivities``
        (FP rate per slide -> sensitivity), ``froc_n_slides``,
        ``froc_n_lesions``, ``froc_n_false_positives``.
    """
    result = evaluate_froc(detections, masks, rates)
    defined = bool(np.isfinite(result.froc))
    return {
        "froc": result.froc if defined else None,
        "froc_sensitivities": {
            rate: (value if defined else None)
            for rate, value in result.sensitivities.items()
        },
        "froc_n_slides": result.n_slides,
        "froc_n_lesions": result.n_lesions,
        "froc_n_false_positives": result.n_false_positives,
    }
