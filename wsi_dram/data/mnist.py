"""MNIST from the four standard IDX files, and the translated / cluttered variants.

* :func:`load_mnist` reads ``train-images-idx3-ubyte.gz`` etc. from a folder; when
  a file is absent it downloads it (if allowed and reachable) and checks its md5,
  else raises :class:`DataError` listing exactly which files to put where.
* :func:`translate` places each 28 x 28 digit at a random place on a larger canvas
  (Mnih et al. 2014, section 4.1); :func:`clutter` adds pieces of other digits.
  Both are deterministic functions of their seed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from wsi_dram.errors import DataError

log = logging.getLogger(__name__)

#: The torchvision mirror of the original files.
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: File name -> md5 of the gzip file.
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_mnist(
    data_dir: Path, download: bool = True, mirror: str = MIRROR, timeout: float = 30.0
) -> None:
    """Make sure the four IDX files are in ``data_dir``, downloading if allowed.

    Raises:
        DataError: A file is missing and cannot be downloaded (the message lists
            the missing files and where to put them), or a download has the wrong
            md5.
    """
    data_dir = Path(data_dir)
    missing = [name for name in FILES if not (data_dir / name).is_file()]
    if not missing:
        return
    if download:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            for name in list(missing):
                _download(mirror + name, data_dir / name, FILES[name], timeout)
                missing.remove(name)
        except OSError as exc:
            log.warning("MNIST download failed: %s", exc)
    if missing:
        listing = ", ".join(missing)
        raise DataError(
            f"MNIST files missing: {listing}; download them (e.g. from {mirror}) "
            f"and put them, still gzipped, in {data_dir.resolve()}/",
            data_dir,
        )


def _download(url: str, dest: Path, md5: str, timeout: float) -> None:
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    if _md5(tmp_path) != md5:
        tmp_path.unlink(missing_ok=True)
        raise DataError(f"downloaded {url} has the wrong md5 (expected {md5})", dest)
    tmp_path.replace(dest)


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (ubyte data) into an array.

    Raises:
        DataError: Not a gzipped IDX file of unsigned bytes, or truncated.
    """
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"not a readable gzip file: {exc}", path) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError("not an IDX file of unsigned bytes", path)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise DataError(
            f"IDX file holds {len(raw) - offset} bytes of data, header says {count}",
            path,
        )
    return np.frombuffer(raw, np.uint8, count, offset).reshape(dims).copy()


def load_mnist(
    data_dir: Path, split: str, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of "train" or "test"."""
    ensure_mnist(data_dir, download)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{prefix} images {images.shape} and labels {labels.shape} do not match",
            data_dir,
        )
    return images, labels.astype(np.int64)


def translate(digits: np.ndarray, canvas: int, seed: int) -> np.ndarray:
    """Each digit at a uniformly random place on a black ``canvas`` square.

    Args:
        digits: (N, h, w) uint8.
        canvas: side of the output in pixels (>= h, w).
        seed: the placement depends only on the seed and N.

    Returns:
        (N, canvas, canvas) uint8.
    """
    n, h, w = digits.shape
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, canvas - h + 1, n)
    xs = rng.integers(0, canvas - w + 1, n)
    out = np.zeros((n, canvas, canvas), np.uint8)
    for i in range(n):
        out[i, ys[i] : ys[i] + h, xs[i] : xs[i] + w] = digits[i]
    return out


def clutter(
    images: np.ndarray, sources: np.ndarray, pieces: int, piece: int, seed: int
) -> np.ndarray:
    """Add ``pieces`` random ``piece x piece`` crops of other digits to each image.

    Crops come from random other digits of ``sources`` (N, 28, 28, the plain
    digits of the same images: never image i's own) at random places inside
    them and are pasted at random places on the canvas by pixel maximum,
    as in cluttered MNIST (Mnih et al. 2014).

    Returns:
        (N, S, S) uint8, a new array.
    """
    n, side, _ = images.shape
    _, h, w = sources.shape
    rng = np.random.default_rng(seed)
    out = images.copy()
    if len(sources) != n or n < 2:
        raise ValueError("sources must be the N >= 2 plain digits of the images")
    src = (np.arange(n)[:, None] + rng.integers(1, n, (n, pieces))) % n
    sy = rng.integers(0, h - piece + 1, (n, pieces))
    sx = rng.integers(0, w - piece + 1, (n, pieces))
    dy = rng.integers(0, side - piece + 1, (n, pieces))
    dx = rng.integers(0, side - piece + 1, (n, pieces))
    for i in range(n):
        for j in range(pieces):
            y, x = sy[i, j], sx[i, j]
            crop = sources[src[i, j], y : y + piece, x : x + piece]
            y, x = dy[i, j], dx[i, j]
            view = out[i, y : y + piece, x : x + piece]
            np.maximum(view, crop, out=view)
    return out
