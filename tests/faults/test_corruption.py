"""Damaged cache chunks and truncated slide files are reported, never read as white."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.faults.conftest import CleanRun
from wsi_dram.cache import store
from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
from wsi_dram.errors import CacheError
from wsi_dram.glimpse.chunks import ChunkCache
from wsi_dram.glimpse.slide import SlideSensor, read_windows

G = 32  # glimpse side


def tissue_chunk(cache: Path, slide_id: str = "synth_000") -> tuple[Path, int, int]:
    """The largest written level-0 chunk file and its (row, col)."""
    level = store.store_path(cache, slide_id) / "0"
    files = [p for p in level.rglob("*") if p.is_file() and p.name[0] != "."]
    path = max(files, key=lambda p: p.stat().st_size)
    _, row, col = (int(part) for part in path.relative_to(level).parts)
    return path, row, col


def centre_of(cache: Path, row: int, col: int) -> np.ndarray:
    chunk = store.open_cache(store.store_path(cache, "synth_000")).levels[0].chunks[1]
    return np.array([[(col + 0.5) * chunk, (row + 0.5) * chunk]])  # (1, 2) (x, y)


def damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "overwrite":  # 32 bytes in the middle of the compressed stream
        mid = len(raw) // 2
        raw[mid : mid + 32] = bytes((b + 97) % 256 for b in raw[mid : mid + 32])
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        os.truncate(path, len(raw) // 2)
    elif how == "delete":
        path.unlink()


def test_intact_chunk_reads_its_stored_pixels(clean_run: CleanRun) -> None:
    path, row, col = tissue_chunk(clean_run.cache)
    cached = store.open_cache(store.store_path(clean_run.cache, "synth_000"))
    out = read_windows(
        cached.levels, centre_of(clean_run.cache, row, col), G, 1, 0, ChunkCache()
    )  # (1, 1, 3, G, G)
    chunk = cached.levels[0].chunks[1]
    cx, cy = int((col + 0.5) * chunk), int((row + 0.5) * chunk)
    want = np.asarray(
        cached.levels[0][:, cy - G // 2 : cy + G // 2, cx - G // 2 : cx + G // 2]
    )
    assert np.array_equal(out[0, 0], want)
    assert (want != 255).any()  # tissue, so white would be a wrong answer


@pytest.mark.parametrize("how", ["overwrite", "truncate", "delete"])
def test_damaged_chunk_raises_cache_error_naming_it(
    clean_run: CleanRun, tmp_path: Path, how: str
) -> None:
    cache = clean_run.copy_cache(tmp_path / "cache")
    path, row, col = tissue_chunk(cache)
    damage(path, how)
    cached = store.open_cache(store.store_path(cache, "synth_000"))
    centre = centre_of(cache, row, col)
    with pytest.raises(CacheError) as info:
        read_windows(cached.levels, centre, G, 1, 0, ChunkCache())
    assert info.value.path == str(path)
    assert "rebuild the cache" in str(info.value) and "\n" not in str(info.value)
    # the same through the sensor the model uses (field centred on the chunk)
    side = 256
    field = [[centre[0, 0] - side / 2, centre[0, 1] - side / 2, side]]
    sensor = SlideSensor(cached, field, size=G, scales=2, cache=ChunkCache())
    with pytest.raises(CacheError) as info:
        sensor.read(torch.zeros(1, 2))
    assert info.value.path == str(path)


def test_truncated_slide_fails_alone_and_the_batch_goes_on(
    clean_run: CleanRun, tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    good = Path(shutil.copy(clean_run.slides[1], slides / "synth_001.tif"))
    broken = slides / "broken.tif"
    shutil.copy(clean_run.slides[0], broken)
    os.truncate(broken, broken.stat().st_size // 2)
    options = PreprocessOptions(chunk=256, block=512)
    rows = preprocess([broken, good], tmp_path / "cache", clean_run.cohort, options)
    assert [(r.slide_id, r.status) for r in rows] == [
        ("broken", "failed"),
        ("synth_001", "done"),
    ]
    reason = rows[0].error
    assert reason.startswith("broken.tif: file is truncated or damaged")
    assert f"the file has {broken.stat().st_size} bytes" in reason
    assert "\n" not in reason
    assert not (tmp_path / "cache" / "broken.ome.zarr").exists()
    assert not list((tmp_path / "cache").glob(".broken*"))
    got = store.open_cache(tmp_path / "cache" / "synth_001.ome.zarr")
    want = clean_run.want["synth_001"]
    for k, level in enumerate(want.levels):
        assert np.array_equal(np.asarray(got.levels[k][...]), level)
