"""Write tiled pyramidal TIFFs that OpenSlide opens as ``generic-tiff``, streaming.

The pixels come from a callback, ``render(level, x, y, w, h)``, asked for one tile
at a time, so no level is ever held in memory: a 100k x 100k slide is written with
a peak resident size of a few hundred MB at most (a bounded queue of tiles being
rendered and encoded). Used by the synthetic cohort (:mod:`wsi_dram.synth`) and
by the heatmap export.

Layout of the file:

- one top-level TIFF page (IFD) per level, level 0 first; every page is tiled
  (``tile`` x ``tile`` px), RGB, 8 bits per sample;
- level k has dimensions ``(W >> k, H >> k)`` (floor division by ``2**k``, as the
  cache uses): level k pixel ``(i, j)`` covers level-0 pixels
  ``[i * 2**k, (i + 1) * 2**k)``; when W or H is not a multiple of ``2**k`` the
  last partial block is dropped at that level, and OpenSlide then reports a
  downsample slightly off ``2**k`` (the exact factor is still ``2**k``);
- levels are added while the previous level's long side exceeds ``min_size``,
  so the last level fits in ``min_size`` px;
- X/YResolution in pixels per centimetre with ResolutionUnit CENTIMETER on every
  page (``10_000 / (mpp * 2**k)``), which OpenSlide reports as
  ``openslide.mpp-x``/``openslide.mpp-y`` (``= 10_000 / resolution``);
- pages after the first are marked reduced-resolution (NewSubfileType 1);
- BigTIFF when the uncompressed pyramid would exceed 2 GiB.

The file is written to ``<path>.tmp`` and renamed into place when complete; a
failed write leaves no file behind.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

log = logging.getLogger(__name__)

Render = Callable[[int, int, int, int, int], np.ndarray]
# encoded(level, width, height, tile) -> the level's tiles, already compressed.
Encoded = Callable[[int, int, int, int], Iterator[bytes]]

_COMPRESSIONS = {"jpeg": "jpeg", "zlib": "zlib", "deflate": "zlib", "none": None}
# The ``compression`` names accepted ("deflate" is another name of "zlib").
COMPRESSIONS = tuple(_COMPRESSIONS)
# Uncompressed pyramid size above which the file is written as BigTIFF.
_BIGTIFF_BYTES = 2**31
# Tiles rendered ahead of the writer per worker (bounds memory, keeps cores busy).
_PREFETCH_PER_WORKER = 4


def pyramid_dimensions(
    width: int, height: int, min_size: int = 512
) -> list[tuple[int, int]]:
    """Return the ``(width, height)`` of every level of the pyramid, level 0 first.

    Level k is ``(width >> k, height >> k)``; levels are added while the previous
    level's long side is above ``min_size`` and the new level is at least 1 px.

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        min_size: Long side (px) at or below which no further level is made.

    Returns:
        The level dimensions ``[(w0, h0), (w1, h1), ...]``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width} x {height}")
    dims = [(width, height)]
    while max(dims[-1]) > min_size:
        k = len(dims)
        w, h = width >> k, height >> k
        if w < 1 or h < 1:
            break
        dims.append((w, h))
    return dims


def write_pyramidal_tiff(
    path: str | Path,
    width: int,
    height: int,
    render: Render,
    mpp: float,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    min_size: int = 512,
    description: str | None = None,
    workers: int | None = None,
    encoded: Encoded | None = None,
) -> list[tuple[int, int]]:
    """Write a tiled pyramidal TIFF whose pixels come from ``render``, tile by tile.

    Args:
        path: Output file (``.tif``). Written as ``<path>.tmp``, then renamed.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        render: ``render(level, x, y, w, h)`` returns the ``(h, w, 3)`` uint8 RGB
            pixels of level ``level`` (downsample ``2**level``) whose top-left is
            ``(x, y)`` in that level's own pixel frame. It is called once per
            tile, from worker threads, so it must be thread-safe.
        mpp: Level-0 pixel size in micrometres per pixel (x and y).
        tile: Tile side in pixels (multiple of 16).
        compression: ``"jpeg"`` (lossy, YCbCr 4:2:0 at ``quality``), ``"zlib"``
            (lossless deflate) or ``"none"``.
        quality: JPEG quality, 1-100.
        min_size: Long side (px) at or below which no further level is made.
        description: ImageDescription of the first page (OpenSlide shows it as
            ``openslide.comment``); avoid text that starts like an Aperio header.
            TIFF strings are 7-bit ASCII: other characters are written as Python
            backslash escapes (``späce`` becomes ``sp\\xe4ce``).
        workers: Threads that render and encode tiles; default ``os.cpu_count()``.
        encoded: Instead of ``render``: ``encoded(level, w, h, tile)`` yields the
            bytes of every tile of a ``w x h`` level in TIFF order (row-major),
            each a ``tile x tile x 3`` uint8 tile (edge tiles padded) already
            compressed with ``compression`` (not "jpeg"); lets a caller encode
            a repeated tile once. ``render`` is then not called.

    Returns:
        The ``(width, height)`` of every level written, level 0 first.

    Raises:
        ValueError: On a bad tile size, compression, mpp, or a render result of
            the wrong shape or dtype.
    """
    if tile % 16 or tile < 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(_COMPRESSIONS)}")
    if encoded is not None and compression == "jpeg":
        raise ValueError("pre-encoded tiles cannot be JPEG (no shared tables)")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number, got {mpp}")
    path = Path(path)
    dims = pyramid_dimensions(width, height, min_size)
    workers = max(1, workers or os.cpu_count() or 1)
    raw_bytes = sum(w * h * 3 for w, h in dims)
    codec = _COMPRESSIONS[compression]
    options: dict[str, object] = {
        "tile": (tile, tile),
        "compression": codec,
        "resolutionunit": "CENTIMETER",
        "metadata": None,
        "photometric": "rgb",  # the input; JPEG pages are stored as YCbCr
        "maxworkers": workers,
        "buffersize": 2 * workers * tile * tile * 3,
    }
    if codec == "jpeg":
        options["compressionargs"] = {"level": int(quality)}
        options["subsampling"] = (2, 2)

    tmp = path.with_name(path.name + ".tmp")
    log.debug("writing %s: levels %s, %s", path, dims, compression)
    try:
        with (
            ThreadPoolExecutor(workers) as pool,
            tifffile.TiffWriter(tmp, bigtiff=raw_bytes > _BIGTIFF_BYTES) as tif,
        ):
            for level, (w, h) in enumerate(dims):
                res = 1e4 / (mpp * 2**level)  # pixels per centimetre
                tif.write(
                    encoded(level, w, h, tile)
                    if encoded is not None
                    else _tiles(pool, workers, render, level, w, h, tile),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    resolution=(res, res),
                    subfiletype=0 if level == 0 else 1,
                    description=(
                        description.encode("ascii", "backslashreplace").decode()
                        if level == 0 and description is not None
                        else None
                    ),
                    **options,  # type: ignore[arg-type]
                )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dims


def _tiles(
    pool: ThreadPoolExecutor,
    workers: int,
    render: Render,
    level: int,
    width: int,
    height: int,
    tile: int,
) -> Iterator[np.ndarray]:
    """Yield the full-size tiles of one level in TIFF order (row-major).

    Tiles are rendered ahead by ``pool``, at most ``_PREFETCH_PER_WORKER *
    workers`` at a time, and yielded in order.
    """
    boxes = (
        (x, y, min(tile, width - x), min(tile, height - y))
        for y in range(0, height, tile)
        for x in range(0, width, tile)
    )
    pending: deque[Future[np.ndarray]] = deque()
    limit = _PREFETCH_PER_WORKER * workers
    for box in boxes:
        pending.append(pool.submit(_render_tile, render, level, *box, tile))
        if len(pending) >= limit:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _render_tile(
    render: Render, level: int, x: int, y: int, w: int, h: int, tile: int
) -> np.ndarray:
    """Render one tile and pad an edge tile to ``tile`` px by repeating its edge.

    Edge repetition (rather than black) keeps JPEG ringing off the last pixels.
    """
    pixels = np.asarray(render(level, x, y, w, h))
    if pixels.shape != (h, w, 3) or pixels.dtype != np.uint8:
        raise ValueError(
            f"render(level={level}, x={x}, y={y}, w={w}, h={h}) returned "
            f"{pixels.dtype} {pixels.shape}, expected uint8 {(h, w, 3)}"
        )
    if w < tile or h < tile:
        pixels = np.pad(pixels, ((0, tile - h), (0, tile - w), (0, 0)), mode="edge")
    return pixels
