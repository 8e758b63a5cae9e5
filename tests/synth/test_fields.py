"""Procedural fields: exact rasterisation, nuclei coverage, level consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from wsi_dram.synth.fields import NucleiField, coverage, rasterise, value_noise


@pytest.mark.parametrize("level", [0, 1, 3])
def test_rasterise_equals_shapely_at_pixel_centres(level: int) -> None:
    theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    r = 300 + 90 * np.sin(3 * theta) + 40 * np.cos(7 * theta)
    outer = np.stack([700 + r * np.cos(theta), 500 + r * np.sin(theta)], axis=1)
    hole = np.stack([700 + 60 * np.cos(theta), 520 + 50 * np.sin(theta)], axis=1)
    polygon = Polygon(outer, [hole])
    f = 2**level
    x, y, w, h = 300 // f, 150 // f, 900 // f, 700 // f
    mask = rasterise([outer, hole], level, x, y, w, h)
    rows, cols = np.mgrid[0:h, 0:w]
    expected = shapely.contains_xy(polygon, (cols + x + 0.5) * f, (rows + y + 0.5) * f)
    assert mask.sum() > 0.2 * w * h
    np.testing.assert_array_equal(mask, expected)


def test_coverage_of_non_overlapping_circles_by_hand() -> None:
    # Circles of radius 5 px in 20 px cells, jitter 5: never overlap, so the
    # covered fraction is presence * pi r^2 / s^2 and E[q; inside] is half of it.
    field = NucleiField(20.0, 0.6, (5.0, 5.0), (1.0, 1.0), 5.0)
    c, m = coverage(field)
    expected = 0.6 * math.pi * 25 / 400
    assert c == pytest.approx(expected, rel=0.02)
    assert m == pytest.approx(expected / 2, rel=0.03)


def test_nuclei_are_the_same_at_every_level() -> None:
    field = NucleiField(17.0, 0.9, (5.0, 8.0), (1.1, 1.6), 8.5)
    # Level-1 pixel centres are level-0 points (2i + 1, 2j + 1).
    fine = (np.arange(600) + 0.5) + 1000.0
    q0, s0 = field.evaluate(42, fine + 0.5, fine + 0.5)
    coarse = (np.arange(300) + 0.5) * 2 + 1000.0
    q1, s1 = field.evaluate(42, coarse, coarse)
    np.testing.assert_array_equal(q1, q0[::2, ::2])
    np.testing.assert_array_equal(s1, s0[::2, ::2])
    assert 0.2 < (q0 < 1).mean() < 0.6


def test_nucleus_must_not_reach_past_neighbours() -> None:
    with pytest.raises(ValueError, match="neighbour"):
        NucleiField(10.0, 0.5, (4.0, 6.0), (1.0, 1.0), 5.0)


def test_value_noise_is_smooth_and_bounded() -> None:
    xs = np.arange(0, 2000, 4.0)
    noise = value_noise(9, xs, xs, period=100.0)
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    assert noise.std() > 0.1
    # Neighbouring samples (4 px apart, period 100 px) differ by little.
    assert np.abs(np.diff(noise, axis=1)).max() < 0.15
    # Tiled evaluation equals one-piece evaluation.
    left = value_noise(9, xs[:250], xs, period=100.0)
    np.testing.assert_allclose(left, noise[:, :250], atol=1e-6)
