"""Writing the pyramid: which blocks, from which source, by which Dask tasks.

Each cache level k (factor 2**k) is written by one task per chunk-aligned *block*
(``block`` pixels square, a multiple of the chunk side), levels in order:

- when the slide has a level whose exact factor is 2**k (``Slide.level_factors``),
  the task copies its stored pixels (``TiffTiles`` or ``Slide.read_level_region``):
  no resampling;
- otherwise (factors 4.0161 without a 2**k match, 1/4/16/32 gaps, single-level
  slides) it reads the 2x2 parent block of cache level k-1 and takes the 2x2 mean
  (rounded half up).

Only chunks with tissue within ``margin`` level-0 pixels are written; the others
stay absent and read as the fill value (white). Writes cover whole chunks (or the
array's edge), so parallel writers never share a chunk: a block size that is not a
multiple of the chunk side is refused (:func:`check_alignment`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
from scipy import ndimage

from wsi_dram.cache.store import ChunkIO
from wsi_dram.cache.tiff_source import TiffTiles
from wsi_dram.errors import ConfigError

ChunkXY = tuple[int, int]


@dataclass(frozen=True)
class BlockTask:
    """One unit of work: a block of one cache level.

    Attributes:
        level: Cache level k.
        x: Block left in level-k pixels (a multiple of the block side).
        y: Block top in level-k pixels.
        width: Block width in level-k pixels (smaller at the right edge).
        height: Block height in level-k pixels.
        chunks: Top-left (x, y) level-k pixels of the chunks to write.
        source_level: Slide level to copy from, or None to bin level k-1.
    """

    level: int
    x: int
    y: int
    width: int
    height: int
    chunks: tuple[ChunkXY, ...]
    source_level: int | None


def check_alignment(block: int, chunk: int) -> None:
    """Refuse write tiles that would split zarr chunks between writers.

    Raises:
        ConfigError: When ``block`` is not a positive multiple of ``chunk``.
    """
    if block <= 0 or chunk <= 0 or block % chunk:
        raise ConfigError(
            f"write tile size {block} px is not a multiple of the zarr chunk size "
            f"{chunk} px: parallel writers would share chunks and overwrite each "
            "other's pixels (zarr-python#328); use a tile that is a multiple of "
            "the chunk, e.g. the chunk size itself"
        )


def source_levels(
    level_factors: Sequence[int | None], level_count: int
) -> list[int | None]:
    """For each cache level, the slide level with exact factor 2**k, or None.

    Level 0 always copies slide level 0.
    """
    out: list[int | None] = []
    for k in range(level_count):
        match = [j for j, f in enumerate(level_factors) if f == 2**k]
        out.append(match[0] if match else (0 if k == 0 else None))
    return out


def plan_blocks(
    width: int,
    height: int,
    level_count: int,
    level_factors: Sequence[int | None],
    tissue_mask: np.ndarray,
    mask_downsample: float,
    chunk: int,
    block: int,
    margin: float,
) -> list[list[BlockTask]]:
    """The block tasks of every level, in level order.

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        level_count: Number of cache levels.
        level_factors: Exact integer factor of each slide level (None if none).
        tissue_mask: Bool (h, w) tissue mask.
        mask_downsample: Level-0 pixels per mask pixel.
        chunk: Chunk side (pixels, every level).
        block: Block side (pixels, a multiple of ``chunk``).
        margin: Level-0 pixels around tissue that are written too.

    Returns:
        ``tasks[k]`` = the blocks of level k that hold at least one chunk to write.
    """
    check_alignment(block, chunk)
    grow = int(math.ceil(margin / mask_downsample))
    mask = tissue_mask.astype(bool)
    if grow > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=grow)
    # Integral image: any tissue in a rectangle in O(1).
    # int32 holds any count of a mask up to 2**31 pixels, at half int64's memory.
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    sources = source_levels(level_factors, level_count)

    def has_tissue(x0: float, y0: float, x1: float, y1: float) -> bool:
        c0 = min(max(int(x0 // mask_downsample), 0), mask.shape[1])
        r0 = min(max(int(y0 // mask_downsample), 0), mask.shape[0])
        c1 = min(max(int(math.ceil(x1 / mask_downsample)), 0), mask.shape[1])
        r1 = min(max(int(math.ceil(y1 / mask_downsample)), 0), mask.shape[0])
        if c1 <= c0 or r1 <= r0:
            return False
        total = (
            integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        )
        return bool(total > 0)

    levels: list[list[BlockTask]] = []
    for k in range(level_count):
        d = 2**k
        wk, hk = max(1, width // d), max(1, height // d)
        tasks = []
        for by in range(0, hk, block):
            for bx in range(0, wk, block):
                bw, bh = min(block, wk - bx), min(block, hk - by)
                chunks = tuple(
                    (cx, cy)
                    for cy in range(by, by + bh, chunk)
                    for cx in range(bx, bx + bw, chunk)
                    if has_tissue(
                        cx * d, cy * d, min(cx + chunk, wk) * d, min(cy + chunk, hk) * d
                    )
                )
                if chunks:
                    tasks.append(BlockTask(k, bx, by, bw, bh, chunks, sources[k]))
        levels.append(tasks)
    return levels


# -- per-process handles (threads share them; worker processes open their own) --

_LOCK = threading.Lock()
_SLIDES: OrderedDict[tuple[str, float | None], Any] = OrderedDict()
_TIFFS: dict[tuple[str, float | None], Any] = {}
_LEVELS: OrderedDict[tuple[str, int], ChunkIO] = OrderedDict()
_MAX_SLIDES = 4
_MAX_LEVELS = 64


def _slide(path: str, mpp: float | None) -> tuple[Any, Any]:
    """The open slide and its direct TIFF reader (None when OpenSlide reads)."""
    from wsi_dram.slides.reader import open_slide

    key = (path, mpp)
    with _LOCK:
        if key in _SLIDES:
            _SLIDES.move_to_end(key)
            return _SLIDES[key], _TIFFS[key]
        slide = open_slide(path, fallback_mpp=mpp)
        _SLIDES[key] = slide
        _TIFFS[key] = TiffTiles.open(slide)
        while len(_SLIDES) > _MAX_SLIDES:
            old_key, old = _SLIDES.popitem(last=False)
            tiles = _TIFFS.pop(old_key)
            if tiles is not None:
                tiles.close()
            old.close()
        return slide, _TIFFS[key]


def _level(path: str, level: int) -> ChunkIO:
    key = (path, level)
    with _LOCK:
        if key in _LEVELS:
            return _LEVELS[key]
        io = ChunkIO(Path(path) / str(level))
        _LEVELS[key] = io
        while len(_LEVELS) > _MAX_LEVELS:
            _LEVELS.popitem(last=False)
        return io


def release_handles(
    store_path: str | None = None, slide_path: str | None = None
) -> None:
    """Forget level handles and close slide handles, so a rewritten file reopens.

    Args:
        store_path: The store whose level handles go (None: every store).
        slide_path: The slide whose handles are closed (None: every slide).
    """
    with _LOCK:
        for level in [k for k in _LEVELS if store_path in (None, k[0])]:
            del _LEVELS[level]
        for key in [k for k in _SLIDES if slide_path in (None, k[0])]:
            tiles = _TIFFS.pop(key, None)
            if tiles is not None:
                tiles.close()
            _SLIDES.pop(key).close()


def bin2x2(pixels: np.ndarray) -> np.ndarray:
    """2x2 mean of a (2h, 2w, 3) uint8 block, rounded half up -> (h, w, 3).

    Four strided uint16 additions: about 8x faster than a reshape + ``sum``
    over the two pair axes (4 ms against 35 ms of CPU per 1024 px block here).
    """
    h2, w2, c = pixels.shape
    quads = pixels.reshape(h2 // 2, 2, w2 // 2, 2, c)
    total = quads[:, 0, :, 0].astype(np.uint16)  # (h, w, 3)
    total += quads[:, 0, :, 1]
    total += quads[:, 1, :, 0]
    total += quads[:, 1, :, 1]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def run_block(task: BlockTask, store: str, slide_path: str, mpp: float | None) -> int:
    """Compute one block and write its selected chunks.

    Only the bounding box of the selected chunks is read: from the slide
    (tifffile's decoder where :class:`TiffTiles` qualifies, else OpenSlide), or
    from the 2x2 parent chunks of level k-1 in the store.

    Args:
        task: The block.
        store: The (temporary) store folder being written.
        slide_path: The source slide (reopened per process).
        mpp: Pixel size (µm/px) for a slide file without one, if any.

    Returns:
        Number of chunks written (all-white chunks are not written).
    """
    out = _level(store, task.level)
    side = out.chunk_w
    x0 = min(cx for cx, _ in task.chunks)
    y0 = min(cy for _, cy in task.chunks)
    x1 = min(max(cx for cx, _ in task.chunks) + side, task.x + task.width)
    y1 = min(max(cy for _, cy in task.chunks) + side, task.y + task.height)
    w, h = x1 - x0, y1 - y0
    if task.source_level is not None:
        slide, tiles = _slide(slide_path, mpp)
        if tiles is not None and tiles.has_level(task.source_level):
            rgb = tiles.read(task.source_level, x0, y0, w, h)  # (h, w, 3)
        else:
            rgb = slide.read_level_region(task.source_level, x0, y0, w, h)
    else:
        parent = _level(store, task.level - 1)
        rgb = bin2x2(parent.read_region(2 * x0, 2 * y0, 2 * w, 2 * h))  # (h, w, 3)
    written = 0
    for cx, cy in task.chunks:
        cw, ch = min(side, x1 - cx), min(side, y1 - cy)
        written += out.write(
            cx, cy, rgb[cy - y0 : cy - y0 + ch, cx - x0 : cx - x0 + cw]
        )
    return written


def write_levels(
    plan: list[list[BlockTask]],
    store: Path,
    slide_path: Path,
    mpp: float | None,
    scheduler: Any = None,
    workers: int = 2,
    on_block: Callable[[int], None] | None = None,
) -> int:
    """Run the block tasks with Dask, one level after the other.

    Args:
        plan: ``plan_blocks`` output.
        store: The store folder (absolute; workers open it by path).
        slide_path: The source slide (absolute).
        mpp: Pixel size (µm/px) for a slide file without one (workers reopen
            the slide with it as the fallback), or None.
        scheduler: None for the threaded scheduler, or a ``distributed.Client``.
        workers: Threads for the threaded scheduler.
        on_block: Called with 1 after each finished block (progress).

    Returns:
        Chunks written over all levels.
    """
    store_s, slide_s = str(Path(store).resolve()), str(Path(slide_path).resolve())
    total = 0
    for tasks in plan:
        if not tasks:
            continue
        if scheduler is None:
            total += _run_threaded(tasks, store_s, slide_s, mpp, workers, on_block)
        else:
            total += _run_distributed(tasks, store_s, slide_s, mpp, scheduler, on_block)
    release_handles(store_s, slide_s)
    return total


def _run_threaded(
    tasks: list[BlockTask],
    store: str,
    slide_path: str,
    mpp: float | None,
    workers: int,
    on_block: Callable[[int], None] | None,
) -> int:
    from dask.callbacks import Callback

    delayed = [
        dask.delayed(run_block, pure=False)(t, store, slide_path, mpp) for t in tasks
    ]

    class _Progress(Callback):  # type: ignore[misc]
        def _posttask(
            self, key: Any, result: Any, dsk: Any, state: Any, id: Any
        ) -> None:
            if on_block is not None and isinstance(result, int):
                on_block(1)

    with _Progress():
        counts = dask.compute(
            *delayed, scheduler="threads", num_workers=max(1, workers)
        )
    return int(sum(counts))


def _run_distributed(
    tasks: list[BlockTask],
    store: str,
    slide_path: str,
    mpp: float | None,
    client: Any,
    on_block: Callable[[int], None] | None,
) -> int:
    from distributed import as_completed

    futures = client.map(
        run_block, tasks, store=store, slide_path=slide_path, mpp=mpp, pure=False
    )
    total = 0
    try:
        for future in as_completed(futures):
            total += int(future.result())
            if on_block is not None:
                on_block(1)
    finally:
        client.cancel(futures)
    client.run(release_handles, store, slide_path)
    return total
