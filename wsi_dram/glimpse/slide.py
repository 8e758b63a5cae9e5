"""Glimpses read from a slide's cached pyramid (the slide side of the sensor).

A glimpse centred on a level-0 point reads one g x g window from each level
``b, b+1, ..., b+K-1`` of the cache (DESIGN section 7): exact slices of the stored
levels, no resizing, white outside the level. Windows are assembled from whole
decoded chunks kept in a shared :class:`~wsi_dram.glimpse.chunks.ChunkCache`; the
chunks a batch lacks are decoded in parallel on a thread pool, each once.

Window convention (the slide form of :mod:`wsi_dram.glimpse.sensor`'s):

* A centre ``(cx, cy)`` in level-0 pixels (continuous; pixel ``c`` spans
  ``[c, c + 1)``) is snapped to the nearest corner of the coarsest level's pixel
  grid: ``ax = s * floor(cx / s + 0.5)`` with ``s = 2**(b + K - 1)`` (likewise
  ``ay``). The snap moves a centre by at most ``s / 2`` level-0 pixels (2 px for
  levels 0/1/2) and makes every level's window an exact slice centred on the same
  level-0 point (OpenSlide pays 0.33 ms per level for unaligned centres against
  0.09 ms aligned; TARGETS.md).
* The window at level ``L`` covers that level's columns
  ``[ax / 2**L - g // 2, ax / 2**L - g // 2 + g)`` (likewise rows), i.e. level-0
  ``[ax - 2**L * (g // 2), ...)``: for an even g, ``[ax - 2**L g/2, ax + 2**L g/2)``,
  which is the window of :func:`wsi_dram.glimpse.sensor.window_origin` at scale
  ``L``. Level ``L`` holds the 2x2 means of level ``L - 1`` (the cache's pyramid),
  so scale k is the same foveated retina as the in-memory sensor's.
* Pixels outside a level are white (255); absent chunks (background never written)
  read as the array's fill value (255 in the cache).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from wsi_dram.errors import ConfigError
from wsi_dram.glimpse.chunks import (
    WHITE,
    ChunkCache,
    LevelReader,
    chunk_cells,
    default_cache,
    level_reader,
    load_chunks,
    paste_chunks,
    read_level_region,
)

log = logging.getLogger(__name__)

__all__ = [
    "ChunkCache",
    "SlideSensor",
    "field_to_level0",
    "level0_to_field",
    "read_level_region",
    "read_windows",
    "read_windows_multi",
    "snap_centres",
    "window_origins",
]


def snap_centres(centres_xy: np.ndarray, top_level: int) -> np.ndarray:
    """Snap level-0 centres to the nearest corner of level ``top_level``'s grid.

    Args:
        centres_xy: (B, 2) level-0 ``(x, y)``, float or int.
        top_level: The coarsest level read; the grid step is ``2**top_level``.

    Returns:
        (B, 2) int64 level-0 ``(x, y)``, multiples of ``2**top_level``.
    """
    step = 2**top_level
    centres = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    return (np.floor(centres / step + 0.5) * step).astype(np.int64)


def window_origins(
    centres_xy: np.ndarray, size: int, scales: int, base_level: int
) -> np.ndarray:
    """Top-left corner of every window of a glimpse, each in its own level's frame.

    Args:
        centres_xy: (B, 2) level-0 ``(x, y)`` centres (snapped here).
        size: g, window side in pixels of its level.
        scales: K, levels ``base_level .. base_level + K - 1``.
        base_level: b, the finest level read.

    Returns:
        (B, K, 2) int64 ``(x, y)``: window k starts there in level ``b + k`` pixels
        (may be negative or past the level's edge: those pixels are white).
    """
    snapped = snap_centres(centres_xy, base_level + scales - 1)  # (B, 2)
    factors = 2 ** (base_level + np.arange(scales, dtype=np.int64))  # (K,)
    return snapped[:, None, :] // factors[None, :, None] - size // 2  # (B, K, 2)


def read_windows(
    levels: Sequence[zarr.Array | LevelReader],
    centres_xy: np.ndarray,
    size: int,
    scales: int,
    base_level: int,
    cache: ChunkCache,
    pool: Executor | None = None,
) -> np.ndarray:
    """Read the K windows of a glimpse at each of B centres of one slide.

    Args:
        levels: The slide's pyramid, level k an array (3, H // 2**k, W // 2**k)
            uint8 (``CachedSlide.levels``).
        centres_xy: (B, 2) level-0 ``(x, y)`` centres; snapped to the coarsest
            level's grid (module docstring).
        size: g, window side in pixels of its level.
        scales: K, the number of levels read, ``base_level .. base_level + K - 1``.
        base_level: b, the finest level read.
        cache: The decoded-chunk cache shared by the batch.
        pool: Executor for decoding missing chunks (default: :func:`default_pool`).

    Returns:
        (B, K, 3, g, g) uint8, white outside the slide.

    Raises:
        ConfigError: When the pyramid has no level ``b + K - 1``.
        CacheError: When a chunk a window needs exists but cannot be decoded.
    """
    readers = _glimpse_readers(levels, base_level, scales, "the slide")
    centres = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    return read_windows_multi(
        [readers] * len(centres), centres, size, base_level, cache, pool
    )


def read_windows_multi(
    readers: Sequence[Sequence[LevelReader]],
    centres_xy: np.ndarray,
    size: int,
    base_level: int,
    cache: ChunkCache,
    pool: Executor | None = None,
) -> np.ndarray:
    """:func:`read_windows` for a batch whose items may lie on different slides.

    Args:
        readers: B lists of K level readers (levels ``b .. b + K - 1`` of item i's
            slide).
        centres_xy: (B, 2) level-0 ``(x, y)`` centres.
        size: g.
        base_level: b (used for the snapping grid only; the readers are the levels).
        cache: Shared decoded-chunk cache.
        pool: Decode executor (default: :func:`default_pool`).

    Returns:
        (B, K, C, g, g) uint8.
    """
    batch = len(readers)
    scales = len(readers[0]) if batch else 0
    channels = readers[0][0].channels if batch else 3
    origins = window_origins(centres_xy, size, scales, base_level)  # (B, K, 2)
    out = np.full((batch, scales, channels, size, size), WHITE, np.uint8)
    if batch == 0:
        return out

    # Plan: every chunk each window overlaps, deduplicated over the batch.
    corners = origins.tolist()
    plans: list[tuple[int, int, LevelReader, list[tuple[int, int]]]] = []
    needed: dict[tuple[str, int, int], tuple[LevelReader, int, int]] = {}
    for i in range(batch):
        for k in range(scales):
            reader = readers[i][k]
            x, y = corners[i][k]
            cells = chunk_cells(reader, x, y, size, size)
            for row, col in cells:
                needed[(reader.token, row, col)] = (reader, row, col)
            plans.append((i, k, reader, cells))
    chunks = load_chunks(needed, cache, pool)

    for i, k, reader, cells in plans:
        x, y = corners[i][k]
        paste_chunks(out[i, k], reader, x, y, cells, chunks)
    return out  # (B, K, C, g, g)


class HasLevels(Protocol):
    """What the sensor needs of a cached slide (``CachedSlide`` fits)."""

    levels: list[Any]


def slide_readers(slide: HasLevels, base_level: int, scales: int) -> list[LevelReader]:
    """Readers of levels ``b .. b + K - 1`` of a cached slide (checked)."""
    name = str(getattr(slide, "slide_id", "slide"))
    return _glimpse_readers(slide.levels, base_level, scales, name)


def _glimpse_readers(
    levels: Sequence[zarr.Array | LevelReader], base_level: int, scales: int, name: str
) -> list[LevelReader]:
    if scales < 1 or base_level < 0:
        raise ConfigError(
            f"scales must be >= 1 and base_level >= 0, got {scales}, {base_level}"
        )
    top = base_level + scales - 1
    if top >= len(levels):
        raise ConfigError(
            f"a glimpse of {scales} scales from level {base_level} needs level {top}, "
            f"but the cache of {name} has levels 0..{len(levels) - 1}; lower "
            "glimpse scales/base_level or rebuild the cache with more levels"
        )
    return [level_reader(levels[base_level + k]) for k in range(scales)]


def field_to_level0(l: Any, fields: Any) -> Any:  # noqa: E741
    """Map locations in ``[-1, 1]`` over a field to level-0 pixels (THE mapping).

    ``x = x0 + (lx + 1) / 2 * side`` and ``y = y0 + (ly + 1) / 2 * side``: -1 is the
    field's left/top edge, +1 its right/bottom edge (exclusive), 0 its centre. ``l``
    is clamped to ``[-1, 1]`` first, as every sensor of the project does.

    Args:
        l: (B, 2) ``(x, y)`` in ``[-1, 1]``, a numpy array or a torch tensor.
        fields: (B, 3) ``(x0, y0, side)`` in level-0 pixels: the top-left corner
            and side of each square field.

    Returns:
        (B, 2) float64 level-0 ``(x, y)`` (continuous), a tensor on ``l``'s device
        when ``l`` is a tensor, else a numpy array.

    Raises:
        ValueError: On NaN/inf locations (a diverged policy) or a count mismatch.
    """
    is_tensor = isinstance(l, torch.Tensor)
    loc = l.detach().cpu().numpy() if is_tensor else np.asarray(l)
    loc = loc.astype(np.float64).reshape(-1, 2)
    if not np.isfinite(loc).all():
        raise ValueError(f"glimpse locations must be finite, got {loc.tolist()}")
    loc = np.clip(loc, -1.0, 1.0)
    boxes = _as_fields(fields)
    if len(boxes) != len(loc):
        raise ValueError(f"{len(loc)} locations for {len(boxes)} fields")
    side = boxes[:, 2:3].astype(np.float64)
    xy = boxes[:, :2] + (loc + 1.0) / 2.0 * side  # (B, 2)
    return torch.from_numpy(xy).to(l.device) if is_tensor else xy


def level0_to_field(xy: np.ndarray, fields: Any) -> np.ndarray:
    """Inverse of :func:`field_to_level0` (no clamping): level-0 (x, y) to l."""
    boxes = _as_fields(fields)
    side = boxes[:, 2:3].astype(np.float64)
    return (np.asarray(xy, dtype=np.float64) - boxes[:, :2]) / side * 2.0 - 1.0


def _as_fields(fields: Any) -> np.ndarray:
    if isinstance(fields, torch.Tensor):
        fields = fields.detach().cpu().numpy()
    boxes = np.asarray(fields, dtype=np.int64).reshape(-1, 3)
    if (boxes[:, 2] <= 0).any():
        raise ValueError(f"field sides must be positive, got {boxes[:, 2].tolist()}")
    return boxes


class SlideSensor:
    """Glimpse sensor over square fields of cached slides (a :class:`GlimpseSensor`).

    Args:
        slides: One cached slide (``CachedSlide``, anything with ``levels``) for
            the whole batch, or one per field.
        fields: (B, 3) ``(x0, y0, side)`` level-0 pixels, one square per item.
        size: g, window side in pixels of its level.
        scales: K; scale k reads level ``base_level + k``.
        base_level: b, the finest level read.
        context_size: ``Hc`` (or ``(Hc, Wc)``) of :meth:`context`.
        cache: Decoded-chunk cache (default: the process-wide
            :func:`~wsi_dram.glimpse.chunks.default_cache`, shared by batches).
        pool: Decode executor (default: the module's thread pool).

    ``pixels_read`` (the efficiency figure): the sum over fields of the DISTINCT
    level-0 area covered by the base-level (finest) windows of every glimpse read
    so far, clipped to the slide (white padding is not counted). At base level b a
    window covers ``(2**b g)**2`` level-0 pixels, read at 1/2**b resolution; the
    coarser scales and the context are not counted, since they see tissue only at
    lower magnification. Setting it to 0 forgets the glimpses read so far.
    """

    channels = 3

    def __init__(
        self,
        slides: HasLevels | Sequence[HasLevels],
        fields: Any,
        size: int,
        scales: int = 1,
        base_level: int = 0,
        context_size: int | tuple[int, int] = 64,
        cache: ChunkCache | None = None,
        pool: Executor | None = None,
    ) -> None:
        self.fields = _as_fields(fields)  # (B, 3)
        self.batch_size = len(self.fields)
        items = [slides] * self.batch_size if hasattr(slides, "levels") else slides
        items = list(items)  # type: ignore[arg-type]
        if len(items) != self.batch_size:
            raise ValueError(f"{len(items)} slides for {self.batch_size} fields")
        if size < 1:
            raise ConfigError(f"glimpse size must be >= 1, got {size}")
        self.slides: list[HasLevels] = items
        self.size, self.scales, self.base_level = size, scales, base_level
        hc, wc = (
            (context_size, context_size)
            if isinstance(context_size, int)
            else context_size
        )
        self.context_size = (int(hc), int(wc))
        self.cache = cache if cache is not None else default_cache()
        self.pool = pool

        by_slide: dict[int, list[LevelReader]] = {}
        for slide in items:
            if id(slide) not in by_slide:
                by_slide[id(slide)] = slide_readers(slide, base_level, scales)
        self._readers = [by_slide[id(slide)] for slide in items]
        self._origins: list[np.ndarray] = []  # each (B, K, 2) level frames
        self._context: torch.Tensor | None = None

    def read(self, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
        """Read one glimpse per field at ``l`` (B, 2) in ``[-1, 1]``.

        Returns:
            (B, K, 3, g, g) float32 in ``[0, 1]`` on ``l``'s device.
        """
        centres = field_to_level0(l.detach().cpu(), self.fields).numpy()  # (B, 2)
        windows = read_windows_multi(
            self._readers, centres, self.size, self.base_level, self.cache, self.pool
        )  # (B, K, 3, g, g) uint8
        self._origins.append(
            window_origins(centres, self.size, self.scales, self.base_level)
        )
        # numpy's single-threaded multiply beats torch's cast + divide here.
        pixels = np.multiply(windows, np.float32(1.0 / 255.0), dtype=np.float32)
        return torch.from_numpy(pixels).to(l.device)

    def context(self) -> torch.Tensor:
        """(B, 3, Hc, Wc) float32 in ``[0, 1]``: each field seen whole, coarsely.

        Read from the coarsest cached level at which the field is still at least
        ``max(Hc, Wc)`` pixels wide (level 0 if none), the field rounded outward
        to whole pixels of that level, then average-pooled to ``(Hc, Wc)``
        (adaptive average pooling, as the in-memory sensor does). Computed once.
        """
        if self._context is None:
            views = [self._context_of(i) for i in range(self.batch_size)]
            self._context = torch.stack(views)  # (B, 3, Hc, Wc)
        return self._context

    def _context_of(self, i: int) -> torch.Tensor:
        x0, y0, side = (int(v) for v in self.fields[i])
        levels = self.slides[i].levels
        need = max(self.context_size)
        level = 0
        while level + 1 < len(levels) and side // 2 ** (level + 1) >= need:
            level += 1
        f = 2**level
        xa, ya = x0 // f, y0 // f
        xb, yb = -(-(x0 + side) // f), -(-(y0 + side) // f)
        region = read_level_region(
            levels[level], xa, ya, xb - xa, yb - ya, self.cache, self.pool
        )  # (3, h, w) uint8
        view = torch.from_numpy(region).to(torch.float32).div_(255.0)
        return F.adaptive_avg_pool2d(view, self.context_size)  # (3, Hc, Wc)

    @property
    def pixels_read(self) -> int:
        """Distinct level-0 slide pixels under the base-level windows (see class)."""
        return int(self.pixels_read_per_field().sum())

    @pixels_read.setter
    def pixels_read(self, value: int) -> None:
        if value != 0:
            raise ValueError("pixels_read can only be reset to 0")
        self._origins.clear()

    def pixels_read_per_field(self) -> np.ndarray:
        """(B,) int64 distinct level-0 pixels read per field (see class docstring)."""
        counts = np.zeros(self.batch_size, dtype=np.int64)
        if not self._origins:
            return counts
        base = np.stack([o[:, 0] for o in self._origins], axis=1)  # (B, T, 2)
        for i in range(self.batch_size):
            reader = self._readers[i][0]
            area = _union_area(base[i], self.size, reader.width, reader.height)
            counts[i] = area * 4**self.base_level
        return counts

    def glimpse_boxes(self) -> np.ndarray:
        """(B, T, K, 4) int64 level-0 ``(x0, y0, x1, y1)`` of every window read."""
        if not self._origins:
            return np.zeros((self.batch_size, 0, self.scales, 4), dtype=np.int64)
        origins = np.stack(self._origins, axis=1)  # (B, T, K, 2) level frames
        factors = 2 ** (self.base_level + np.arange(self.scales, dtype=np.int64))
        start = origins * factors[None, None, :, None]
        end = start + self.size * factors[None, None, :, None]
        return np.concatenate([start, end], axis=-1)  # (B, T, K, 4)


def _union_area(origins: np.ndarray, size: int, width: int, height: int) -> int:
    """Area of the union of size x size squares at (T, 2) origins, clipped to WxH."""
    x0 = np.clip(origins[:, 0], 0, width)
    y0 = np.clip(origins[:, 1], 0, height)
    x1 = np.clip(origins[:, 0] + size, 0, width)
    y1 = np.clip(origins[:, 1] + size, 0, height)
    keep = (x1 > x0) & (y1 > y0)
    if not keep.any():
        return 0
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    xs = np.unique(np.concatenate([x0, x1]))
    ys = np.unique(np.concatenate([y0, y1]))
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for a, b, c, d in zip(
        np.searchsorted(xs, x0),
        np.searchsorted(xs, x1),
        np.searchsorted(ys, y0),
        np.searchsorted(ys, y1),
        strict=True,
    ):
        covered[c:d, a:b] = True
    cell = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return int(cell[covered].sum())
