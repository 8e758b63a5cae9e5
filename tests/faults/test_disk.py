"""A full disk or a read-only cache folder: one clear error, nothing damaged."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import pytest
import zarr.storage._local as zarr_local

from tests.faults.conftest import CleanRun
from wsi_dram.benchmarks import faults
from wsi_dram.cache import manifest
from wsi_dram.cache.manifest import manifest_path, read_manifest
from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
from wsi_dram.cli import main
from wsi_dram.errors import CacheError

OPTIONS = PreprocessOptions(chunk=faults.CHUNK, block=faults.BLOCK)


def fill_disk_after(
    monkeypatch: pytest.MonkeyPatch, cache: Path, writes: int
) -> list[str]:
    """Make file writes under ``cache`` fail with ENOSPC after ``writes`` of them.

    Both ways the cache writes files are covered: zarr's LocalStore (metadata,
    labels) and plain ``Path.write_bytes`` (the pyramid's chunk writer).
    """
    real_put, real_write_bytes = zarr_local._put, Path.write_bytes
    done: list[str] = []

    def count(path: Path) -> None:
        if str(path).startswith(str(cache)):
            if len(done) >= writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            done.append(str(path))

    def put(path: Path, value, exclusive: bool = False):  # noqa: ANN001, ANN202
        count(path)
        return real_put(path, value, exclusive)

    def write_bytes(self: Path, data) -> int:  # noqa: ANN001
        count(self)
        return real_write_bytes(self, data)

    monkeypatch.setattr(zarr_local, "_put", put)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return done


def cache_files(cache: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file()
    }


def test_disk_full_midway_stops_with_one_line_and_keeps_what_was_written(
    clean_run: CleanRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A previous run cached synth_000; this run rebuilds it (force) and the disk
    # fills while its pyramid is written.
    cache = tmp_path / "cache"
    preprocess(clean_run.slides[:1], cache, clean_run.cohort, OPTIONS)
    before = cache_files(cache)
    writes = fill_disk_after(monkeypatch, cache, 30)
    force = PreprocessOptions(chunk=faults.CHUNK, block=faults.BLOCK, force=True)
    with pytest.raises(CacheError) as info:
        preprocess(clean_run.slides, cache, clean_run.cohort, force)
    assert len(writes) == 30
    chunk_files = [w for w in writes if re.search(r"/\d+/\d+/\d+/\d+$", w)]
    assert chunk_files  # it failed midway through the pyramid's chunks
    message = str(info.value)
    assert message.startswith(f"{cache}: cannot write the cache while caching ")
    assert "No space left on device" in message and "\n" not in message
    # the earlier complete store, its tiles, QC and the manifest are untouched,
    # and no half-written store is left
    assert cache_files(cache) == before
    got = faults.snapshot_store(cache, "synth_000")
    assert faults.diff_snapshots(got, clean_run.want["synth_000"]) == []
    assert [r.status for r in read_manifest(manifest_path(cache))] == ["done"]


def test_disk_full_while_writing_the_manifest_keeps_the_old_one(
    clean_run: CleanRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = clean_run.copy_cache(tmp_path / "cache")
    old = manifest_path(cache).read_bytes()
    real_write = manifest._write_rows

    def full(tmp: Path, rows):  # noqa: ANN001, ANN202
        real_write(tmp, rows[:1])  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(manifest, "_write_rows", full)
    with pytest.raises(CacheError, match="cannot write manifest.csv"):
        preprocess(clean_run.slides, cache, clean_run.cohort, OPTIONS)
    assert manifest_path(cache).read_bytes() == old
    assert not list(cache.glob(".manifest.csv.*"))


def unwritable_cache(tmp_path: Path) -> Path:
    """A cache folder this process cannot write into.

    chmod 0o555 stops an ordinary user; root ignores it, so under root the cache
    path lies below a regular file (creating it fails with NotADirectoryError).
    """
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "cache"


def test_unwritable_cache_folder_is_one_line_exit_2(
    clean_run: CleanRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    cache = unwritable_cache(tmp_path)
    with pytest.raises(CacheError, match="cache folder is not writable"):
        preprocess(clean_run.slides, cache, clean_run.cohort, OPTIONS)
    argv = ["wsi-dram", "preprocess", str(clean_run.slides[0]), "--cache", str(cache)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {cache}: cache folder is not writable (")
    assert "Traceback" not in "\n".join(err)


def test_read_only_store_folder_keeps_the_finished_store(
    clean_run: CleanRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Permission denied inside the cache (what chmod gives a normal user, here
    # simulated for root): the finished store and the manifest stay intact.
    cache = clean_run.copy_cache(tmp_path / "cache")
    before = cache_files(cache)
    real = zarr_local._put

    def denied(path: Path, value, exclusive: bool = False):  # noqa: ANN001, ANN202
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(zarr_local, "_put", denied)
    force = PreprocessOptions(chunk=faults.CHUNK, block=faults.BLOCK, force=True)
    with pytest.raises(CacheError, match="Permission denied"):
        preprocess(clean_run.slides, cache, clean_run.cohort, force)
    monkeypatch.setattr(zarr_local, "_put", real)
    assert cache_files(cache) == before


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from tests.faults.test_training_resume import write_config
    from wsi_dram.errors import CheckpointError
    from wsi_dram.training import checkpoints, read_train_config, train

    config = read_train_config(write_config(tmp_path), ["train.epochs=2"])
    run = tmp_path / "run"
    real_save = torch.save
    saves: list[str] = []

    def save(obj, f):  # noqa: ANN001, ANN202
        saves.append(Path(f).name)
        if len(saves) > 2:  # epoch 1 wrote best.pt and last.pt; then full
            Path(f).write_bytes(b"PK\x03\x04 partial")
            raise RuntimeError(
                "[enforce fail at inline_container.cc] file write failed"
            )
        return real_save(obj, f)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    last = run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError) as info:
        train(config, run)
    assert str(info.value).startswith(f"{run / 'checkpoints'}/")
    assert "cannot write the checkpoint (" in str(info.value)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert checkpoints.load_checkpoint(last)["epoch"] == 1  # intact, epoch 1
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_unwritable_run_folder_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    from tests.faults.test_training_resume import write_config

    config = write_config(tmp_path)
    run = unwritable_cache(tmp_path) / "run"
    argv = ["wsi-dram", "train", "--config", str(config), "--out", str(run)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    code = errno.ENOTDIR if os.geteuid() == 0 else errno.EACCES
    reason = os.strerror(code)
    assert err == [f"error: {run}: cannot write the run folder ({reason})"]
