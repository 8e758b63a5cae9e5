"""The in-memory glimpse sensor against the reference case and hand-cut windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import CASES, need
from wsi_dram.glimpse.sensor import GlimpseSensor, PyramidSensor, glimpse_boxes

CASE = CASES / "ram-glimpse-nonsquare-border"


def _case() -> tuple[np.ndarray, list[list[float]], np.ndarray]:
    need(CASE)
    image = np.load(CASE / "image_24x40.npy")
    meta = json.loads((CASE / "locations.json").read_text())
    return image, meta["locations_xy"], np.load(CASE / "expected_glimpses.npy")


def test_reference_case_exact() -> None:
    image, locations, expected = _case()
    batch = torch.from_numpy(image)[None, None].repeat(len(locations), 1, 1, 1)
    sensor = PyramidSensor(batch, size=8, scales=2, background=0.0)
    out = sensor.read(torch.tensor(locations))
    assert out.shape == (7, 2, 1, 8, 8)
    np.testing.assert_array_equal(out[:, :, 0].numpy(), expected)


def test_reference_case_checks_by_hand() -> None:
    image, locations, _ = _case()
    batch = torch.from_numpy(image)[None, None].repeat(len(locations), 1, 1, 1)
    out = PyramidSensor(batch, 8, 2).read(torch.tensor(locations))[:, :, 0].numpy()
    # (-1, -1): rows 0-3, columns 0-3 are image, the rest padding
    assert np.count_nonzero(out[1, 0]) == 16
    np.testing.assert_array_equal(out[1, 0, 4:, 4:], image[:4, :4])
    assert out[4, 0, 0, 0] == 527  # (0.5, -0.25): row 5, column 26
    assert out[2, 0, 0, 0] == 2037  # (1, 1): row 20, column 36
    np.testing.assert_array_equal(out[6], _read_one(image, (1.0, 0.0)))  # clamped


def _read_one(image: np.ndarray, xy: tuple[float, float]) -> np.ndarray:
    sensor = PyramidSensor(torch.from_numpy(image)[None, None], 8, 2)
    return sensor.read(torch.tensor([xy]))[0, :, 0].numpy()


def _hand_window(
    image: np.ndarray, x0: int, y0: int, side: int, factor: int, bg: float
) -> np.ndarray:
    """(C, side/factor, side/factor) window with top-left (x0, y0), block means."""
    c, h, w = image.shape
    canvas = np.full((c, side, side), bg, np.float64)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + side, h), min(x0 + side, w)
    if ye > ys and xe > xs:
        canvas[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = image[:, ys:ye, xs:xe]
    n = side // factor
    return canvas.reshape(c, n, factor, n, factor).mean(axis=(2, 4))


def test_windows_cut_by_hand_batched_rgb() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, 3, 30, 22)).astype(np.float32)  # non-square, RGB
    l = torch.tensor(  # noqa: E741
        [[0.0, 0.0], [-0.93, 0.41], [0.77, -1.0], [1.0, 1.0], [-2.0, 0.2]]
    )
    g, scales, bg = 6, 3, 1.0
    out = PyramidSensor(torch.from_numpy(images), g, scales, background=bg).read(l)
    assert out.shape == (5, 3, 3, g, g)
    for b, (x, y) in enumerate(l.clamp(-1, 1).tolist()):
        ax = int(np.floor((x + 1) / 2 * 22 + 0.5))
        ay = int(np.floor((y + 1) / 2 * 30 + 0.5))
        for k in range(scales):
            side = 2**k * g
            want = _hand_window(
                images[b], ax - side // 2, ay - side // 2, side, 2**k, bg
            )
            np.testing.assert_allclose(out[b, k].numpy(), want, rtol=0, atol=1e-6)


def test_aligned_centres_are_slices_of_the_decimated_pyramid() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((1, 32, 32)).astype(np.float32)
    level1 = image.reshape(1, 16, 2, 16, 2).mean(axis=(2, 4))
    level2 = level1.reshape(1, 8, 2, 8, 2).mean(axis=(2, 4))
    # centre (16, 12): level-0 window of scale 2 starts at (16 - 8, 12 - 8) = (8, 4),
    # a multiple of 4, i.e. level-2 pixel (2, 1)
    l = torch.tensor([[16 / 32 * 2 - 1, 12 / 32 * 2 - 1]])  # noqa: E741
    out = PyramidSensor(torch.from_numpy(image)[None], 4, 3).read(l)[0].numpy()
    np.testing.assert_allclose(out[0], image[:, 10:14, 14:18], atol=1e-6)
    np.testing.assert_allclose(out[1], level1[:, 4:8, 6:10], atol=1e-6)
    np.testing.assert_allclose(out[2], level2[:, 1:5, 2:6], atol=1e-6)


def test_pixels_read_and_boxes() -> None:
    sensor = PyramidSensor(torch.zeros(2, 1, 28, 28), 8, 2)
    assert isinstance(sensor, GlimpseSensor)
    l = torch.tensor([[0.0, 0.0], [-1.0, -1.0]])  # noqa: E741
    sensor.read(l)
    # coarsest window 16 x 16: fully inside at the centre, a quarter at a corner
    assert sensor.pixels_read == 256 + 64
    boxes = glimpse_boxes(l, 28, 28, 8, 2)
    assert boxes[0].tolist() == [[10, 10, 18, 18], [6, 6, 22, 22]]
    assert boxes[1].tolist() == [[-4, -4, 4, 4], [-8, -8, 8, 8]]


def test_context_is_the_pooled_image() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    view = PyramidSensor(image, 2, 1, context_size=2).context()
    assert view.tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        PyramidSensor(torch.zeros(28, 28), 8, 1)
