"""Preprocessing killed with SIGKILL, then rerun (the short form of the soak)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.faults.conftest import CleanRun
from wsi_dram.benchmarks import faults
from wsi_dram.cache import store
from wsi_dram.cache.manifest import manifest_path, read_manifest
from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
from wsi_dram.errors import CacheError


def test_three_sigkills_then_rerun_equals_uninterrupted(
    clean_run: CleanRun, tmp_path: Path
) -> None:
    # SIGKILL the real CLI three times at seeded random moments (one of them while
    # a store is half-written), rerun to the end; after every kill each finished
    # store equals the clean run's, half-written ones are refused, and finished
    # stores are never rebuilt.
    cache = tmp_path / "cache"
    report = faults.kill_series(
        clean_run.slides,
        cache,
        clean_run.cohort,
        clean_run.want,
        kills=3,
        rng=np.random.default_rng(11),
        work_seconds=clean_run.seconds,
    )
    assert report.problems == []
    assert report.kills == 3
    assert sorted(report.final_status) == ["synth_000", "synth_001"]
    # the final caches equal the uninterrupted run's array for array
    for slide_id, want in clean_run.want.items():
        got = faults.snapshot_store(cache, slide_id)
        assert faults.diff_snapshots(got, want) == []
        assert (cache / "qc" / f"{slide_id}.png").stat().st_size > 0
    assert not list(cache.glob(".*.ome.zarr.partial"))


def test_snapshot_diff_sees_one_changed_pixel(clean_run: CleanRun, tmp_path: Path):
    # the equality the kill test relies on is not blind: one changed pixel of
    # one level is reported, and nothing else
    cache = clean_run.copy_cache(tmp_path / "cache")
    import zarr

    arr = zarr.open_array(str(cache / "synth_000.ome.zarr" / "1"), mode="r+")
    value = int(arr[0, 5, 7])
    arr[0, 5, 7] = (value + 1) % 256
    diffs = faults.diff_snapshots(
        faults.snapshot_store(cache, "synth_000"), clean_run.want["synth_000"]
    )
    assert diffs == ["level 1 differs"]


def _half_written_copy(clean_run: CleanRun, cache: Path) -> Path:
    # What a kill during the pyramid leaves: the store under its temporary name,
    # without `complete: true`.
    partial = cache / ".synth_000.ome.zarr.partial"
    shutil.copytree(clean_run.cache / "synth_000.ome.zarr", partial)
    zattrs = partial / ".zattrs"
    data = json.loads(zattrs.read_text())
    data["wsi_dram"]["complete"] = False
    zattrs.write_text(json.dumps(data))
    return partial


def test_half_written_store_is_refused_and_replaced(
    clean_run: CleanRun, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    partial = _half_written_copy(clean_run, cache)
    with pytest.raises(CacheError, match="incomplete") as info:
        store.open_cache(partial)
    assert str(partial) in str(info.value)
    # the same store moved to the final name is still refused (no complete flag)
    final = cache / "synth_000.ome.zarr"
    shutil.copytree(partial, final)
    with pytest.raises(CacheError, match="incomplete"):
        store.open_cache(final)
    options = PreprocessOptions(chunk=faults.CHUNK, block=faults.BLOCK)
    rows = preprocess(clean_run.slides[:1], cache, clean_run.cohort, options)
    assert [r.status for r in rows] == ["done"]  # rebuilt, not skipped
    assert not partial.exists()
    got = faults.snapshot_store(cache, "synth_000")
    assert faults.diff_snapshots(got, clean_run.want["synth_000"]) == []


def test_skip_redraws_a_qc_picture_lost_to_a_kill(
    clean_run: CleanRun, tmp_path: Path
) -> None:
    # A kill between the store's rename and its QC picture: the next run skips
    # the store (mtimes unchanged) but draws the missing picture.
    cache = clean_run.copy_cache(tmp_path / "cache")
    qc = cache / "qc" / "synth_001.png"
    qc.unlink()
    before = faults.store_mtimes(cache, "synth_001")
    options = PreprocessOptions(chunk=faults.CHUNK, block=faults.BLOCK)
    rows = preprocess(clean_run.slides, cache, clean_run.cohort, options)
    assert [r.status for r in rows] == ["skipped", "skipped"]
    assert faults.store_mtimes(cache, "synth_001") == before
    assert qc.stat().st_size > 0
    statuses = {r.slide_id: r.status for r in read_manifest(manifest_path(cache))}
    assert statuses == {"synth_000": "skipped", "synth_001": "skipped"}
