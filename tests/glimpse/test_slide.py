"""Glimpse windows from cache-like stores (built with zarr directly): geometry by
hand, pixels against numpy slices of the stored levels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from wsi_dram.errors import CacheError, ConfigError
from wsi_dram.glimpse.chunks import ChunkCache, level_reader
from wsi_dram.glimpse.slide import (
    SlideSensor,
    field_to_level0,
    level0_to_field,
    read_windows,
    snap_centres,
    window_origins,
)

CHUNK = 32


@dataclass
class FakeCachedSlide:
    """The part of ``CachedSlide`` the sensor uses."""

    slide_id: str
    levels: list[zarr.Array]


def make_store(
    path: Path, width: int, height: int, n_levels: int, seed: int
) -> tuple[FakeCachedSlide, list[np.ndarray]]:
    """A store in the cache layout (zarr 2, levels "k" of (3, H >> k, W >> k)).

    Each level holds its own random pixels (the reader does not care how a level
    was made) with a white square that is never written (absent chunks).
    """
    rng = np.random.default_rng(seed)
    root = zarr.open_group(path, mode="w", zarr_format=2)
    truth = []
    for k in range(n_levels):
        shape = (3, height >> k, width >> k)
        pixels = rng.integers(0, 250, shape, dtype=np.uint8)
        pixels[:, :CHUNK, CHUNK : 2 * CHUNK] = 255  # chunk (0, 1): background
        array = root.create_array(
            str(k),
            shape=shape,
            chunks=(3, CHUNK, CHUNK),
            dtype="uint8",
            fill_value=255,
            compressors=numcodecs.Zstd(level=1),
            config={"write_empty_chunks": False},
        )
        array[...] = pixels
        truth.append(pixels)
    opened = zarr.open_group(path, mode="r")
    slide = FakeCachedSlide(path.stem, [opened[str(k)] for k in range(n_levels)])
    return slide, truth


def oracle(level: np.ndarray, x: int, y: int, g: int) -> np.ndarray:
    """Window (3, g, g) at level-frame (x, y), pixel by pixel, white outside."""
    rows, cols = np.arange(y, y + g), np.arange(x, x + g)
    inside = (rows[:, None] >= 0) & (rows[:, None] < level.shape[1])
    inside = inside & (cols[None, :] >= 0) & (cols[None, :] < level.shape[2])
    r = np.clip(rows, 0, level.shape[1] - 1)[:, None]
    c = np.clip(cols, 0, level.shape[2] - 1)[None, :]
    return np.where(inside[None], level[:, r, c], 255).astype(np.uint8)


@pytest.fixture
def store(tmp_path: Path) -> tuple[FakeCachedSlide, list[np.ndarray]]:
    return make_store(tmp_path / "s1.ome.zarr", 203, 150, 4, seed=0)


def test_window_origins_by_hand() -> None:
    # K=3 from level 0: centres snap to multiples of 4 (nearest, halves up).
    assert snap_centres(np.array([[101.9, 37.0], [102.0, 1.99]]), 2).tolist() == [
        [100, 36],
        [104, 0],
    ]
    origins = window_origins(np.array([[100, 37]]), size=8, scales=3, base_level=0)
    assert origins.tolist() == [[[96, 32], [46, 14], [21, 5]]]
    origins = window_origins(np.array([[100, 37]]), size=8, scales=2, base_level=1)
    assert origins.tolist() == [[[46, 14], [21, 5]]]


def test_windows_match_padded_slices(store) -> None:
    slide, truth = store
    rng = np.random.default_rng(5)
    # Inside, on the edges and wholly outside the 203 x 150 slide.
    centres = rng.uniform([-40, -40], [243, 190], size=(60, 2))
    centres[:3] = [[0, 0], [203, 150], [-300, 20]]
    g, base, scales = 12, 1, 2
    out = read_windows(slide.levels, centres, g, scales, base, ChunkCache())
    assert out.shape == (60, 2, 3, g, g) and out.dtype == np.uint8

    snap = 2 ** (base + scales - 1)
    for i, (cx, cy) in enumerate(centres):
        ax, ay = (int(np.floor(v / snap + 0.5)) * snap for v in (cx, cy))
        for k in range(scales):
            f = 2 ** (base + k)
            expected = oracle(truth[base + k], ax // f - g // 2, ay // f - g // 2, g)
            np.testing.assert_array_equal(out[i, k], expected, err_msg=f"{i},{k}")
    assert (out[2] == 255).all()


def test_pool_and_serial_reads_agree(store) -> None:
    slide, _ = store
    centres = np.random.default_rng(6).uniform(0, 150, size=(40, 2))
    with ThreadPoolExecutor(1) as one:
        serial = read_windows(slide.levels, centres, 16, 3, 0, ChunkCache(), one)
    parallel = read_windows(slide.levels, centres, 16, 3, 0, ChunkCache())
    np.testing.assert_array_equal(serial, parallel)


def test_reads_touch_only_the_chunks_of_the_windows(store) -> None:
    slide, _ = store
    cache = ChunkCache()
    # Centre (72, 40), g=8, levels 0/1/2: windows [68,76)x[36,44) at level 0 (chunk
    # row 1, col 2), [32,40)x[16,24) at level 1 (row 0, col 1: absent) and
    # [14,22)x[6,14) at level 2 (row 0, col 0).
    read_windows(slide.levels, np.array([[72, 40]]), 8, 3, 0, cache)
    tokens = [level_reader(a).token for a in slide.levels]
    expected = {(tokens[0], 1, 2), (tokens[1], 0, 1), (tokens[2], 0, 0)}
    assert len(cache) == 3
    assert all(key in cache for key in expected)
    assert cache.lookup([(tokens[1], 0, 1)]) == {(tokens[1], 0, 1): None}


def test_absent_chunks_read_white(store, tmp_path: Path) -> None:
    slide, _ = store
    assert not (tmp_path / "s1.ome.zarr" / "0" / "0.0.1").exists()
    out = read_windows(slide.levels, np.array([[48, 16]]), 16, 1, 0, ChunkCache())
    assert (out == 255).all()


def test_corrupted_chunk_raises_cache_error_with_path(store, tmp_path: Path) -> None:
    slide, _ = store
    chunk = tmp_path / "s1.ome.zarr" / "1" / "0.1.1"
    chunk.write_bytes(chunk.read_bytes()[:20])
    # Level-1 window [24,32)^2 (centre 56 level-0) lies in chunk (0, 0);
    # centre 80 puts it at [36,44)^2, in chunk (1, 1) of level 1.
    read_windows(slide.levels, np.array([[56, 56]]), 8, 2, 0, ChunkCache())
    with pytest.raises(CacheError, match=str(chunk)):
        read_windows(slide.levels, np.array([[80, 80]]), 8, 2, 0, ChunkCache())
    sensor = SlideSensor(slide, [(0, 0, 160)], size=8, scales=2, cache=ChunkCache())
    with pytest.raises(CacheError, match=str(chunk)):
        sensor.read(torch.tensor([[0.0, 0.0]]))


def test_glimpse_beyond_the_pyramid_is_a_config_error(store) -> None:
    slide, _ = store
    with pytest.raises(ConfigError, match="needs level 4"):
        read_windows(slide.levels, np.zeros((1, 2)), 8, 3, 2, ChunkCache())


def test_field_to_level0_by_hand() -> None:
    fields = np.array([[100, 200, 64], [0, 0, 1000]])
    l = np.array([[-1.0, -1.0], [0.5, 0.0]])  # noqa: E741
    np.testing.assert_allclose(field_to_level0(l, fields), [[100, 200], [750, 500]])
    # Clamped to [-1, 1]; tensors come back as tensors.
    out = field_to_level0(torch.tensor([[2.0, 1.0], [-3.0, 0.25]]), fields)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), [[164, 264], [0, 625]])
    with pytest.raises(ValueError, match="finite"):
        field_to_level0(np.array([[np.nan, 0.0], [0.0, 0.0]]), fields)
    np.testing.assert_allclose(
        level0_to_field([[132, 232], [750, 500]], fields), [[0, 0], [0.5, 0.0]]
    )


def test_sensor_reads_windows_of_each_fields_slide(store, tmp_path: Path) -> None:
    slide, truth = store
    other, other_truth = make_store(tmp_path / "s2.ome.zarr", 120, 90, 3, seed=1)
    fields = [(10, 20, 80), (0, 0, 120)]
    sensor = SlideSensor([slide, other], fields, size=8, scales=2, cache=ChunkCache())
    l = torch.tensor([[0.0, 0.5], [-1.0, 1.0]])  # noqa: E741
    glimpse = sensor.read(l)
    assert glimpse.shape == (2, 2, 3, 8, 8) and glimpse.dtype == torch.float32
    # Item 0: level-0 (50, 80) -> windows at (46, 76) L0 and (21, 36) L1.
    # Item 1: level-0 (0, 120) -> (-4, 116) L0 and (-4, 56) L1.
    cases = [(0, truth, [(46, 76), (21, 36)]), (1, other_truth, [(-4, 116), (-4, 56)])]
    for i, levels, origins in cases:
        for k, (x, y) in enumerate(origins):
            expected = torch.from_numpy(oracle(levels[k], x, y, 8).astype(np.float32))
            torch.testing.assert_close(glimpse[i, k], expected / 255)


def test_pixels_read_counts_distinct_base_window_area(store) -> None:
    slide, _ = store
    sensor = SlideSensor(slide, [(0, 0, 64)], size=8, scales=3, cache=ChunkCache())
    assert sensor.pixels_read == 0
    for cx, cy in [(20, 20), (24, 20), (0, 0), (20, 20)]:
        sensor.read(torch.tensor([[cx / 32 - 1, cy / 32 - 1]]))
    # [16,24)^2 = 64, plus [24,28)x[16,24) = 32, plus [0,4)^2 inside the slide = 16;
    # the repeated glimpse adds nothing.
    assert sensor.pixels_read == 64 + 32 + 16
    assert sensor.glimpse_boxes()[0, 2].tolist() == [
        [-4, -4, 4, 4],
        [-8, -8, 8, 8],
        [-16, -16, 16, 16],
    ]
    sensor.pixels_read = 0
    assert sensor.pixels_read == 0


def test_pixels_read_at_base_level_one(store) -> None:
    slide, _ = store
    # 203 x 150 slide: level 1 is 101 x 75, i.e. level-0 [0, 202) x [0, 150).
    sensor = SlideSensor(
        slide, [(0, 0, 200)], size=8, scales=1, base_level=1, cache=ChunkCache()
    )
    sensor.read(torch.tensor([[1.0, 1.0]]))  # level-0 (200, 200)
    # Window at level 1: [96, 104) x [96, 104) clipped to 101 x 75: nothing in y.
    assert sensor.pixels_read == 0
    sensor.read(torch.tensor([[1.0, -1.0]]))  # level-0 (200, 0)
    # [96, 101) x [0, 4) at level 1 = 20 level-1 px = 80 level-0 px.
    assert sensor.pixels_read == 80


def test_context_reads_the_best_level_and_pools(store) -> None:
    slide, truth = store
    sensor = SlideSensor(
        slide,
        [(0, 0, 64), (6, 10, 48)],
        size=8,
        scales=1,
        context_size=16,
        cache=ChunkCache(),
    )
    context = sensor.context()
    assert context.shape == (2, 3, 16, 16)
    # Field 0: 64 / 4 = 16 px at level 2 (level 3 would give 8): an exact slice.
    torch.testing.assert_close(
        context[0], torch.from_numpy(truth[2][:, :16, :16].astype(np.float32)) / 255
    )
    # Field 1: 48 / 2 = 24 px at level 1; level-1 columns [3, 27), rows [5, 29).
    region = torch.from_numpy(truth[1][:, 5:29, 3:27].astype(np.float32)) / 255
    torch.testing.assert_close(context[1], F.adaptive_avg_pool2d(region, 16))


def test_concurrent_batches_through_a_tiny_shared_cache(store) -> None:
    slide, _ = store
    rng = np.random.default_rng(7)
    batches = [rng.uniform(-10, 210, size=(16, 2)) for _ in range(8)]
    expected = [read_windows(slide.levels, b, 16, 3, 0, ChunkCache()) for b in batches]
    # Room for 4 decoded chunks only: constant eviction while 4 threads read.
    tiny = ChunkCache(max_bytes=4 * 3 * CHUNK * CHUNK)
    with ThreadPoolExecutor(4) as callers:
        got = list(
            callers.map(
                lambda b: read_windows(slide.levels, b, 16, 3, 0, tiny), batches
            )
        )
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have, want)
    assert tiny.nbytes <= tiny.max_bytes and tiny.evictions > 0
