"""ROC and FROC PNGs: valid PNG files of the requested size."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from wsi_dram.evaluation.froc import SlideLesions, froc_curve
from wsi_dram.evaluation.plots import plot_froc, plot_roc


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, checking the signature and CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert crc == zlib.crc32(kind + body)
    width, height = struct.unpack(">II", body[:8])
    assert data[-8:-4] == b"IEND"
    return width, height


def test_roc_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    scores = labels * 0.5 + rng.random(40)
    out = plot_roc(
        labels,
        scores,
        tmp_path / "plots" / "roc.png",
        auc_ci=(0.7, 0.9),
        threshold=0.8,
        size_px=500,
    )
    assert out == tmp_path / "plots" / "roc.png"
    assert png_size(out) == (500, 500)
    assert out.stat().st_size > 5_000  # a drawn figure, not an empty canvas
    assert not list(out.parent.glob("*.tmp*"))


def test_froc_png(tmp_path: Path) -> None:
    results = [
        SlideLesions("a", np.array([0.7, 0.3]), np.array([0.9, 0.0]), 1),
        SlideLesions("b", np.array([0.4]), np.array([0.5]), 1),
        SlideLesions("c", np.array([0.95, 0.2]), np.zeros(0), 0),
    ]
    fps, sens = froc_curve(results)
    out = plot_froc(fps, sens, tmp_path / "froc.png", size_px=640)
    assert png_size(out) == (640, 640)
    assert out.stat().st_size > 5_000
