"""The decoded-chunk LRU and the chunk reader (stores built with zarr directly)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from wsi_dram.errors import CacheError
from wsi_dram.glimpse.chunks import ChunkCache, LevelReader, read_level_region


def make_level(
    path: Path,
    pixels: np.ndarray,
    chunk: int,
    compressor: object = None,
    separator: str = ".",
) -> zarr.Array:
    """A cache-like level: zarr 2, (3, c, c) chunks, fill 255, white unwritten."""
    root = zarr.open_group(path, mode="a", zarr_format=2)
    array = root.create_array(
        "0",
        shape=pixels.shape,
        chunks=(3, chunk, chunk),
        dtype="uint8",
        fill_value=255,
        compressors=compressor if compressor is not None else numcodecs.Zstd(level=1),
        chunk_key_encoding={"name": "v2", "separator": separator},
        config={"write_empty_chunks": False},
    )
    array[...] = pixels
    return zarr.open_array(path / "0", mode="r")


def block(nbytes: int) -> np.ndarray:
    return np.zeros(nbytes, dtype=np.uint8)


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    cache = ChunkCache(max_bytes=300)
    for key in "abc":
        cache.put(key, block(100))
    assert cache.nbytes == 300
    # Touch "a": "b" becomes the least recently used and goes first.
    assert cache.lookup(["a"]).keys() == {"a"}
    cache.put("d", block(100))
    assert "b" not in cache and {"a", "c", "d"} == {k for k in "abcd" if k in cache}
    # A 250-byte entry pushes out two more (c, then a) to stay within 300.
    cache.put("e", block(250))
    assert [k for k in "abcde" if k in cache] == ["e"]
    assert cache.nbytes == 250 and cache.evictions == 4


def test_entry_larger_than_bound_is_returned_not_kept() -> None:
    cache = ChunkCache(max_bytes=50)
    value = cache.get_or_load("big", lambda: block(100))
    assert value is not None and value.nbytes == 100
    assert "big" not in cache and cache.nbytes == 0


def test_absent_chunks_are_remembered_cheaply() -> None:
    cache = ChunkCache(max_bytes=1000)
    calls = []
    for _ in range(3):
        assert cache.get_or_load("white", lambda: calls.append(1)) is None
    assert len(calls) == 1 and cache.hits == 2 and cache.misses == 1


def test_concurrent_callers_share_one_load() -> None:
    cache = ChunkCache(max_bytes=10_000)
    calls = []
    start = threading.Barrier(8)

    def load() -> np.ndarray:
        calls.append(1)
        time.sleep(0.05)
        return block(10)

    results = []

    def worker() -> None:
        start.wait()
        results.append(cache.get_or_load("k", load))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_failed_load_is_not_cached_and_retried() -> None:
    cache = ChunkCache(max_bytes=1000)

    def fail() -> np.ndarray:
        raise CacheError("broken", "x/0.0.0")

    with pytest.raises(CacheError):
        cache.get_or_load("k", fail)
    assert "k" not in cache
    assert cache.get_or_load("k", lambda: block(5)) is not None


@pytest.mark.parametrize("separator", [".", "/"])
@pytest.mark.parametrize(
    "compressor", [numcodecs.Zstd(level=1), numcodecs.Blosc(cname="lz4")]
)
def test_reader_decodes_stored_chunks(
    tmp_path: Path, separator: str, compressor: object
) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 200, (3, 70, 90), dtype=np.uint8)
    pixels[:, :32, :32] = 255  # chunk (0, 0) is white: never written
    reader = LevelReader(
        make_level(tmp_path / "s.zarr", pixels, 32, compressor, separator)
    )
    assert reader.shape_chunks == (3, 3)
    assert reader.load(0, 0) is None
    chunk = reader.load(1, 2)
    assert chunk is not None and chunk.shape == (3, 32, 32)
    # Edge chunk: rows 32..63, columns 64..89 stored, the rest is padding.
    np.testing.assert_array_equal(chunk[:, :, :26], pixels[:, 32:64, 64:90])


def test_region_padded_white_outside_the_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 200, (3, 50, 60), dtype=np.uint8)
    level = make_level(tmp_path / "s.zarr", pixels, 16)
    out = read_level_region(level, -5, 40, 20, 15, ChunkCache())
    expected = np.full((3, 15, 20), 255, np.uint8)
    expected[:, :10, 5:] = pixels[:, 40:50, 0:15]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupted_chunk_raises_with_its_path(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 200, (3, 64, 64), dtype=np.uint8)
    level = make_level(tmp_path / "s.zarr", pixels, 32)
    path = tmp_path / "s.zarr" / "0" / "0.1.0"
    raw = path.read_bytes()
    damaged = {"truncate": raw[: len(raw) // 2], "empty": b"", "garbage": b"x" * 99}
    path.write_bytes(damaged[damage])
    cache = ChunkCache()
    with pytest.raises(CacheError) as info:
        read_level_region(level, 0, 30, 10, 10, cache)
    assert str(path) in str(info.value)
    # Nothing was cached for the broken chunk; an intact neighbour still reads.
    assert len(cache) <= 1
    np.testing.assert_array_equal(
        read_level_region(level, 40, 0, 8, 8, cache), pixels[:, 0:8, 40:48]
    )


def test_zarr_v3_arrays_read_by_exact_slices(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 200, (3, 40, 40), dtype=np.uint8)
    array = zarr.create_array(
        tmp_path / "v3.zarr",
        shape=pixels.shape,
        chunks=(3, 16, 16),
        dtype="uint8",
        fill_value=255,
    )
    array[...] = pixels
    out = read_level_region(array, 10, 30, 20, 20, ChunkCache())
    expected = np.full((3, 20, 20), 255, np.uint8)
    expected[:, :10, :] = pixels[:, 30:40, 10:30]
    np.testing.assert_array_equal(out, expected)
