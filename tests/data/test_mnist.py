"""MNIST IDX reading, download checks and the translated / cluttered variants."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, need
from wsi_dram.data import mnist
from wsi_dram.data.mnist import clutter, ensure_mnist, load_mnist, read_idx, translate
from wsi_dram.errors import DataError

MNIST = DATA / "mnist"


def test_reads_the_standard_files() -> None:
    need(MNIST)
    x, y = load_mnist(MNIST, "train", download=False)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    xt, yt = load_mnist(MNIST, "test", download=False)
    assert xt.shape == (10000, 28, 28)
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(yt).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_offline_error_lists_the_missing_files(tmp_path: Path) -> None:
    need(MNIST)
    shutil.copy(MNIST / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError) as err:
        ensure_mnist(tmp_path, download=False)
    text = str(err.value)
    for name in mnist.FILES:
        assert (name in text) == (name != "t10k-labels-idx1-ubyte.gz")
    assert str(tmp_path.resolve()) in text


def test_download_checks_md5(tmp_path: Path) -> None:
    need(MNIST)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in mnist.FILES:
        shutil.copy(MNIST / name, mirror / name)
    ensure_mnist(tmp_path / "ok", mirror=mirror.as_uri() + "/")
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(mnist.FILES)

    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"broken"))
    with pytest.raises(DataError, match="md5"):
        ensure_mnist(tmp_path / "bad", mirror=mirror.as_uri() + "/")
    assert not (tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz").exists()


def test_idx_header_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc"))
    with pytest.raises(DataError, match="header says 5"):
        read_idx(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError):
        read_idx(path)


def test_translate_keeps_each_digit_whole_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    digits = rng.integers(1, 256, (20, 28, 28), dtype=np.uint8)  # no zero pixels
    a = translate(digits, 60, seed=3)
    assert a.shape == (20, 60, 60)
    assert np.array_equal(a, translate(digits, 60, seed=3))
    assert not np.array_equal(a, translate(digits, 60, seed=4))
    for i in range(20):
        ys, xs = np.nonzero(a[i])
        y0, x0 = ys.min(), xs.min()
        assert ys.max() - y0 == 27 and xs.max() - x0 == 27
        assert np.array_equal(a[i, y0 : y0 + 28, x0 : x0 + 28], digits[i])


def test_clutter_adds_pieces_of_other_digits() -> None:
    digits = np.zeros((3, 28, 28), np.uint8)
    digits[0], digits[1], digits[2] = 10, 20, 30  # flat "digits"
    canvas = np.zeros((3, 60, 60), np.uint8)
    out = clutter(canvas, digits, pieces=4, piece=8, seed=0)
    for i in range(3):
        values = set(np.unique(out[i]).tolist()) - {0}
        assert values and (10 * (i + 1)) not in values  # never its own digit
        assert np.count_nonzero(out[i]) <= 4 * 64
    assert np.array_equal(out, clutter(canvas, digits, 4, 8, seed=0))
