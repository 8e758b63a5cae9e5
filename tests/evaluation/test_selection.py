"""Model selection on a few validation slides: AUC first, separation breaks ties."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from wsi_dram.evaluation.slides import selection_value


def _scored(pairs: list[tuple[int, float]]) -> list[Any]:
    return [
        SimpleNamespace(
            slide_id=f"s{i}",
            label=label,
            scores=SimpleNamespace(score=score, pixels_read=10, tissue_pixels=1000),
        )
        for i, (label, score) in enumerate(pairs)
    ]


def test_separation_breaks_a_tie_of_perfect_aucs() -> None:
    vague = selection_value(_scored([(1, 0.63), (1, 0.62), (0, 0.61), (0, 0.60)]))
    clear = selection_value(_scored([(1, 0.99), (1, 0.90), (0, 0.10), (0, 0.20)]))
    assert vague["auc"] == clear["auc"] == 1.0
    # Separations worked out by hand: 0.625 - 0.605 and 0.945 - 0.15.
    assert vague["separation"] == pytest.approx(0.02)
    assert clear["separation"] == pytest.approx(0.795)
    assert clear["selection"] > vague["selection"]
    assert vague["pixels_read_fraction"] == pytest.approx(0.01)


def test_a_better_auc_always_wins_over_separation() -> None:
    # AUC 0.75 (one swapped pair of 2 x 2) with a large separation loses to AUC 1
    # with a tiny one.
    swapped = selection_value(_scored([(1, 1.0), (1, 0.30), (0, 0.40), (0, 0.0)]))
    tight = selection_value(_scored([(1, 0.51), (1, 0.51), (0, 0.50), (0, 0.50)]))
    assert swapped["auc"] == pytest.approx(0.75)
    assert tight["selection"] > swapped["selection"]
