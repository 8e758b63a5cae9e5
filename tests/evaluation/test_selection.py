"""Model selection on a few validation slides: the margin AUC."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from wsi_dram.evaluation.slides import margin_auc, selection_value


def _scored(pairs: list[tuple[int, float]]) -> list[Any]:
    return [
        SimpleNamespace(
            slide_id=f"s{i}",
            label=label,
            scores=SimpleNamespace(score=score, pixels_read=10, tissue_pixels=1000),
        )
        for i, (label, score) in enumerate(pairs)
    ]


def test_margin_auc_by_hand() -> None:
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.55, 0.5, 0.1])
    # Pairs (tumour - normal): 0.4, 0.8, 0.05, 0.45 -> 1, 1, 0.75, 1 with margin 0.1.
    assert margin_auc(labels, scores, 0.1) == pytest.approx(3.75 / 4)
    # A reversed pair beyond the margin counts 0, like in the AUC.
    assert margin_auc(np.array([1, 0]), np.array([0.2, 0.9]), 0.1) == 0.0


def test_a_lucky_perfect_order_of_near_equal_scores_loses() -> None:
    # An untrained model: every score near 0.5, ordered right by luck (AUC 1).
    lucky = selection_value(_scored([(1, 0.63), (1, 0.62), (0, 0.61), (0, 0.60)]))
    # A trained model with one normal slide scored high (AUC 0.75).
    trained = selection_value(_scored([(1, 0.99), (1, 0.40), (0, 0.60), (0, 0.05)]))
    assert lucky["auc"] == 1.0 and trained["auc"] == pytest.approx(0.75)
    # Lucky: pair differences 0.02, 0.03, 0.01, 0.02 -> 0.6, 0.65, 0.55, 0.6.
    assert lucky["margin_auc"] == pytest.approx(0.6)
    # Trained: 0.39, 0.94, -0.2, 0.35 -> 1, 1, 0, 1.
    assert trained["margin_auc"] == pytest.approx(0.75)
    assert trained["selection"] > lucky["selection"]
    assert lucky["pixels_read_fraction"] == pytest.approx(0.01)


def test_clear_separation_gives_the_auc() -> None:
    clear = selection_value(_scored([(1, 0.99), (1, 0.90), (0, 0.10), (0, 0.20)]))
    assert clear["selection"] == clear["auc"] == 1.0
