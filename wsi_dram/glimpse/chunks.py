"""Decoded chunks of the cache's pyramid levels, behind one bounded LRU.

A glimpse window is small (64 px) and a chunk is large (256-1024 px), so the cost of
a read is the decode of the chunk, not the copy of the window. zarr-python spends
about 1.9 ms per small read (call overhead plus a full chunk decode); slicing an
already decoded chunk costs microseconds. :class:`ChunkCache` keeps decoded chunks,
bounded by bytes, shared by every window of a batch (and by every batch that uses
the same cache), and :class:`LevelReader` fetches and decodes whole chunks of one
level.

Chunks are read straight from the store: for zarr format 2 arrays the raw bytes are
decoded with the array's own compressor and filters (1.3-2.6x less CPU per chunk
than ``array[...]`` on the same chunk-aligned slice in the glimpse benchmark, since
zarr's per-call machinery is skipped); other arrays fall back to an exact
chunk-aligned ``array[...]`` slice.

Known limit: cache keys name the store path and level, so a store rewritten while a
process holds decoded chunks of it is served stale until :meth:`ChunkCache.clear`.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs.compat import ensure_ndarray_like
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.sync import sync
from zarr.storage import LocalStore

from wsi_dram.cache.store import read_checksums
from wsi_dram.errors import CacheError

log = logging.getLogger(__name__)

WHITE = 255
"""Value of pixels outside a level."""

DEFAULT_CACHE_BYTES = 512 * 2**20
"""Default bound of :func:`default_cache`: about 680 decoded 512 px RGB chunks."""

# A cached absent chunk (background) costs a dictionary slot, not a decoded array.
_ABSENT_COST = 64

ChunkKey = tuple[str, int, int]
"""(level token, chunk row, chunk column) naming one decoded chunk."""


class ChunkCache:
    """Thread-safe LRU of decoded chunks, bounded by their bytes.

    Absent chunks (background, never written) are remembered too, as ``None``, so a
    white region costs one file-system miss per process, not one per read.

    Args:
        max_bytes: Upper bound of the decoded bytes kept (arrays' ``nbytes``). A
            chunk larger than the bound is returned but not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, tuple[np.ndarray | None, int]] = (
            OrderedDict()
        )
        self._loading: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def lookup(self, keys: Iterable[Hashable]) -> dict[Hashable, np.ndarray | None]:
        """Return the cached entries among ``keys`` (one lock for all of them).

        Found entries become the most recently used and count as hits; missing keys
        are simply left out (they are counted when loaded by :meth:`get_or_load`).
        """
        found: dict[Hashable, np.ndarray | None] = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[key] = entry[0]
            self.hits += len(found)
        return found

    def get_or_load(
        self, key: Hashable, load: Callable[[], np.ndarray | None]
    ) -> np.ndarray | None:
        """Return the chunk under ``key``, calling ``load()`` once if it is missing.

        Concurrent callers asking for the same missing key wait for one load
        instead of decoding it twice. An exception from ``load`` reaches every
        caller that was waiting on it and nothing is cached.
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0]
                pending = self._loading.get(key)
                if pending is None:
                    done = threading.Event()
                    self._loading[key] = done
                    self.misses += 1
                    break
            pending.wait()
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0]
            # The loader failed or its chunk was evicted at once: load it here.

        try:
            value = load()
            self.put(key, value)
            return value
        finally:
            with self._lock:
                del self._loading[key]
            done.set()

    def put(self, key: Hashable, value: np.ndarray | None) -> None:
        """Store a decoded chunk (or ``None`` for an absent one), evicting LRU."""
        cost = _ABSENT_COST if value is None else int(value.nbytes)
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._entries[key] = (value, cost)
            self.nbytes += cost
            while self.nbytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.nbytes -= evicted
                self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def stats(self) -> dict[str, int]:
        """Counters for logs and benchmarks: entries, bytes, hits, misses, evictions."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }


_default_lock = threading.Lock()
_default: tuple[int, ChunkCache] | None = None


def default_cache() -> ChunkCache:
    """The process-wide cache used when none is given (one per process id).

    Sensors are made per batch, so sharing one cache across them is what keeps
    the tissue a model revisits decoded.
    """
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            _default = (os.getpid(), ChunkCache(DEFAULT_CACHE_BYTES))
        return _default[1]


class LevelReader:
    """Fetches and decodes whole chunks of one pyramid level.

    Args:
        array: A zarr array of shape (C, H, W) uint8, axes (c, y, x), chunked
            (C, ch, cw) (all channels in one chunk, as the cache writes them).

    Raises:
        CacheError: When the array is not laid out that way.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.location = _array_location(array)
        if array.ndim != 3 or array.dtype != np.uint8:
            raise CacheError(
                f"expected a (c, y, x) uint8 level, got shape {array.shape} "
                f"dtype {array.dtype}",
                self.location,
            )
        channels, height, width = (int(n) for n in array.shape)
        chunk_c, chunk_h, chunk_w = (int(n) for n in array.chunks)
        if chunk_c != channels:
            raise CacheError(
                f"chunks {array.chunks} split the channels; the cache keeps all "
                f"{channels} channels in one chunk",
                self.location,
            )
        self.channels, self.height, self.width = channels, height, width
        self.chunk_h, self.chunk_w = chunk_h, chunk_w
        fill = array.fill_value
        self.fill_value = 0 if fill is None else int(fill)
        self.token = self.location

        meta = array.metadata
        self._v2: ArrayV2Metadata | None = None
        self._file_root: Path | None = None
        if isinstance(meta, ArrayV2Metadata):
            self._v2 = meta
            if isinstance(array.store, LocalStore):
                self._file_root = Path(array.store.root) / array.path
        # CRC-32 per chunk written by preprocess (None for other stores)
        self._crc = None if self._file_root is None else read_checksums(self._file_root)

    @property
    def shape_chunks(self) -> tuple[int, int]:
        """Number of chunk rows and columns of the level."""
        return (-(-self.height // self.chunk_h), -(-self.width // self.chunk_w))

    def chunk_key(self, row: int, col: int) -> str:
        """The store key of chunk (row, col), relative to the array."""
        if self._v2 is not None:
            return self._v2.encode_chunk_key((0, row, col))
        return self.array.metadata.encode_chunk_key((0, row, col))

    def chunk_path(self, row: int, col: int) -> str:
        """Where chunk (row, col) lives, for messages (a file path when local)."""
        key = self.chunk_key(row, col)
        if self._file_root is not None:
            return str(self._file_root / key)
        return f"{self.location}/{key}"

    def chunk(self, row: int, col: int, cache: ChunkCache) -> np.ndarray | None:
        """Decoded chunk (row, col) through ``cache``; ``None`` when absent."""
        key: ChunkKey = (self.token, row, col)
        return cache.get_or_load(key, lambda: self.load(row, col))

    def load(self, row: int, col: int) -> np.ndarray | None:
        """Read and decode chunk (row, col) from the store, bypassing any cache.

        Returns:
            The chunk, (C, ch, cw) uint8 read-only, or ``None`` when the chunk was
            never written (background: the fill value).

        Raises:
            CacheError: Naming the chunk's path when it exists but cannot be read or
                decoded (truncated, corrupted, wrong size). Never read as white.
        """
        if self._v2 is None:
            return self._load_sliced(row, col)
        raw = self._read_raw(row, col)
        if raw is None:
            return None
        try:
            return self._decode_v2(raw)
        except Exception as exc:
            raise CacheError(
                f"chunk {(0, row, col)} of a {self.height}x{self.width} level "
                f"cannot be decoded ({type(exc).__name__}: {exc}); rebuild the cache "
                "of this slide",
                self.chunk_path(row, col),
            ) from exc

    def _read_raw(self, row: int, col: int) -> bytes | None:
        key = self.chunk_key(row, col)
        try:
            if self._file_root is not None:
                with open(self._file_root / key, "rb") as handle:
                    raw = handle.read()
                want = None if self._crc is None else self._crc.get(key)
                if want is not None and zlib.crc32(raw) != want:
                    raise CacheError(
                        "chunk file does not match its checksum (corrupted or "
                        "truncated); rebuild the cache of this slide",
                        self.chunk_path(row, col),
                    )
                return raw
            prototype = default_buffer_prototype()
            path = f"{self.array.path}/{key}" if self.array.path else key
            buffer = sync(self.array.store.get(path, prototype))
            return None if buffer is None else buffer.to_bytes()
        except FileNotFoundError:
            if self._crc is not None and key in self._crc:
                raise CacheError(
                    "chunk file is missing (preprocess wrote it); rebuild the cache "
                    "of this slide",
                    self.chunk_path(row, col),
                ) from None
            return None
        except OSError as exc:
            raise CacheError(
                f"chunk cannot be read ({exc})", self.chunk_path(row, col)
            ) from exc

    def _decode_v2(self, raw: bytes) -> np.ndarray:
        meta = self._v2
        assert meta is not None
        data: Any = raw
        if meta.compressor is not None:
            data = meta.compressor.decode(data)
        for codec in reversed(meta.filters or ()):
            data = codec.decode(data)
        chunk = ensure_ndarray_like(data)
        if chunk.dtype != np.uint8:
            chunk = chunk.view(np.uint8)
        expected = self.channels * self.chunk_h * self.chunk_w
        if chunk.size != expected:
            raise ValueError(f"{chunk.size} bytes decoded, {expected} expected")
        order = "F" if meta.order == "F" else "C"
        shape = (self.channels, self.chunk_h, self.chunk_w)
        chunk = chunk.reshape(-1, order="A").reshape(shape, order=order)
        chunk.flags.writeable = False
        return chunk

    def _load_sliced(self, row: int, col: int) -> np.ndarray:
        # Any other array (zarr format 3, sharded...): an exact chunk-aligned read.
        # Absence cannot be told apart from a stored fill here; both give the fill.
        y0, x0 = row * self.chunk_h, col * self.chunk_w
        y1, x1 = min(y0 + self.chunk_h, self.height), min(x0 + self.chunk_w, self.width)
        try:
            part = np.asarray(self.array[:, y0:y1, x0:x1])
        except Exception as exc:
            raise CacheError(
                f"chunk {(0, row, col)} cannot be read ({type(exc).__name__}: {exc})",
                self.chunk_path(row, col),
            ) from exc
        chunk = np.full(
            (self.channels, self.chunk_h, self.chunk_w), self.fill_value, np.uint8
        )
        chunk[:, : y1 - y0, : x1 - x0] = part
        chunk.flags.writeable = False
        return chunk


def _array_location(array: zarr.Array) -> str:
    store = array.store
    if isinstance(store, LocalStore):
        return str((Path(store.root) / array.path).resolve())
    return f"{store}/{array.path}#{id(store):x}"


# Readers by level location, so arrays reopened from one store share one reader,
# and by array identity (holding the array), so a repeated call costs one lookup.
_MAX_READERS = 4096
_readers: OrderedDict[tuple[str, tuple[int, ...], tuple[int, ...]], LevelReader] = (
    OrderedDict()
)
_readers_by_id: OrderedDict[int, tuple[zarr.Array, LevelReader]] = OrderedDict()
_readers_lock = threading.Lock()
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def level_reader(array: zarr.Array | LevelReader) -> LevelReader:
    """The (memoised) :class:`LevelReader` of a level array."""
    if isinstance(array, LevelReader):
        return array
    known = _readers_by_id.get(id(array))
    if known is not None and known[0] is array:
        return known[1]
    key = (_array_location(array), tuple(array.shape), tuple(array.chunks))
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = LevelReader(array)
            _readers[key] = reader
            if len(_readers) > _MAX_READERS:
                _readers.popitem(last=False)
        _readers.move_to_end(key)
        _readers_by_id[id(array)] = (array, reader)
        if len(_readers_by_id) > _MAX_READERS:
            _readers_by_id.popitem(last=False)
        return reader


def default_pool() -> ThreadPoolExecutor:
    """The module's decode pool (one per process, ``min(8, cpu count)`` threads).

    Private to the glimpse reader: tasks submitted here never wait on it, so it
    cannot deadlock; do not submit work that calls :func:`read_windows` to it.
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = min(8, os.cpu_count() or 1)
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(workers, thread_name_prefix="glimpse"),
            )
        return _pool[1]


def read_level_region(
    level: zarr.Array | LevelReader,
    x: int,
    y: int,
    width: int,
    height: int,
    cache: ChunkCache,
    pool: Executor | None = None,
) -> np.ndarray:
    """Exact stored pixels of one level, white outside it.

    Args:
        level: A level array (C, H, W) uint8 or its reader.
        x: Left column in THAT level's pixel frame (may be negative).
        y: Top row in that level's pixel frame.
        width: Columns to read.
        height: Rows to read.
        cache: Shared decoded-chunk cache.
        pool: Decode executor (default: :func:`default_pool`).

    Returns:
        (C, height, width) uint8.
    """
    reader = level_reader(level)
    out = np.full((reader.channels, height, width), WHITE, np.uint8)
    cells = chunk_cells(reader, x, y, width, height)
    needed = {(reader.token, r, c): (reader, r, c) for r, c in cells}
    chunks = load_chunks(needed, cache, pool)
    paste_chunks(out, reader, x, y, cells, chunks)
    return out


def chunk_cells(
    reader: LevelReader, x: int, y: int, width: int, height: int
) -> list[tuple[int, int]]:
    """(row, col) of the chunks that the rectangle overlaps inside the level."""
    x_lo, x_hi = max(x, 0), min(x + width, reader.width)
    y_lo, y_hi = max(y, 0), min(y + height, reader.height)
    if x_lo >= x_hi or y_lo >= y_hi:
        return []
    rows = range(y_lo // reader.chunk_h, (y_hi - 1) // reader.chunk_h + 1)
    cols = range(x_lo // reader.chunk_w, (x_hi - 1) // reader.chunk_w + 1)
    return [(r, c) for r in rows for c in cols]


def load_chunks(
    needed: dict[tuple[str, int, int], tuple[LevelReader, int, int]],
    cache: ChunkCache,
    pool: Executor | None,
) -> dict[tuple[str, int, int], np.ndarray | None]:
    """Decoded chunks for every needed key: hits first, misses decoded in parallel.

    The result holds references, so a batch larger than the cache still completes.
    """
    chunks: dict[Any, np.ndarray | None] = cache.lookup(needed)
    missing = [item for key, item in needed.items() if key not in chunks]
    if len(missing) == 1:
        reader, row, col = missing[0]
        chunks[(reader.token, row, col)] = reader.chunk(row, col, cache)
    elif missing:
        executor = pool if pool is not None else default_pool()
        loaded = executor.map(
            lambda item: item[0].chunk(item[1], item[2], cache), missing
        )
        for (reader, row, col), chunk in zip(missing, loaded, strict=True):
            chunks[(reader.token, row, col)] = chunk
    return chunks


def paste_chunks(
    dst: np.ndarray,
    reader: LevelReader,
    x: int,
    y: int,
    cells: list[tuple[int, int]],
    chunks: dict[tuple[str, int, int], np.ndarray | None],
) -> None:
    """Copy the parts of ``cells`` inside the level into ``dst`` (C, h, w) at (x, y)."""
    _, height, width = dst.shape
    x_hi = min(x + width, reader.width)
    y_hi = min(y + height, reader.height)
    for row, col in cells:
        cy0, cx0 = row * reader.chunk_h, col * reader.chunk_w
        # Intersection of window, chunk and level, in level pixels.
        top, bottom = max(y, cy0), min(y_hi, cy0 + reader.chunk_h)
        left, right = max(x, cx0), min(x_hi, cx0 + reader.chunk_w)
        chunk = chunks[(reader.token, row, col)]
        target = dst[:, top - y : bottom - y, left - x : right - x]
        if chunk is None:
            if reader.fill_value != WHITE:
                target[...] = reader.fill_value
        else:
            target[...] = chunk[:, top - cy0 : bottom - cy0, left - cx0 : right - cx0]
