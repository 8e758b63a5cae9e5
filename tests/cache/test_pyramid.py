"""Pyramid levels: exact copies of factor-2**k source levels, 2x2 means otherwise,
aligned parallel writes, and the field cases about levels and no-data tiles."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import openslide
import pytest
import zarr

from tests.cache.helpers import build_full, ramp_rgb, write_tiff
from tests.conftest import CASES, DATA, need
from wsi_dram.cache import pyramid, store
from wsi_dram.errors import ConfigError


def _mean2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[0] // 2, a.shape[1] // 2
    s = a[: 2 * h, : 2 * w].astype(np.uint16)
    s = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def test_unaligned_writer_config_is_refused():
    cfg = json.loads(
        (
            need(CASES / "zarr-unaligned-parallel-writes") / "writer_config.json"
        ).read_text()
    )
    tile, chunk = cfg["write_tile_yx"][0], cfg["zarr_chunks_yx"][0]
    with pytest.raises(ConfigError) as err:
        pyramid.check_alignment(tile, chunk)
    assert "300" in str(err.value) and "256" in str(err.value)
    with pytest.raises(ConfigError):
        pyramid.plan_blocks(
            1200, 1200, 1, [1], np.ones((4, 4), bool), 300, chunk, tile, 0
        )
    pyramid.check_alignment(512, 256)  # a multiple is fine


def test_aligned_threaded_writes_lose_no_pixel(tmp_path):
    ref = ramp_rgb(1200, 1200)
    slide = write_tiff(tmp_path / "ramp.tif", ref)
    levels = build_full(slide, tmp_path / "ramp.ome.zarr", workers=8)
    assert int((levels[0] != ref).any(axis=2).sum()) == 0
    assert np.array_equal(levels[1], _mean2(ref))
    assert np.array_equal(levels[2], _mean2(levels[1]))


@pytest.mark.slow
def test_local_cluster_processes_write_the_same_store(tmp_path):
    distributed = pytest.importorskip("distributed")
    ref = ramp_rgb(1200, 1000)
    slide = write_tiff(tmp_path / "ramp.tif", ref)
    threaded = build_full(slide, tmp_path / "threads.ome.zarr")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        clustered = build_full(slide, tmp_path / "cluster.ome.zarr", scheduler=client)
    assert len(threaded) == len(clustered) == 7  # 1200 -> 18 px
    for a, b in zip(threaded, clustered, strict=True):
        assert np.array_equal(a, b)
    assert int((clustered[0] != ref).any(axis=2).sum()) == 0


def test_near_integer_levels_are_the_stored_rasters(tmp_path):
    case = need(CASES / "near-integer-downsample-level-choice")
    levels = build_full(case / "near_integer.tif", tmp_path / "n.ome.zarr", mpp=1.0)
    assert [lv.shape[:2] for lv in levels[:5]] == [
        (769, 1025),
        (384, 512),
        (192, 256),
        (96, 128),
        (48, 64),
    ]
    sha = [
        hashlib.sha256(np.ascontiguousarray(lv).tobytes()).hexdigest() for lv in levels
    ]
    assert sha[2] == "c817aa8dfb2be320200cb8b33ee54eecbbb6e128bc09bcb1a1d777f13cc3c80b"
    assert sha[4] == "a6287ad7f78c1d1f0ff8907a20684b40c33754f09a9118f40c010ac42fa66235"
    # Level 1 has no source level: the 2x2 mean of the cached level 0.
    assert np.array_equal(levels[1], _mean2(levels[0]))
    assert pyramid.source_levels([1, 4, 16], 5) == [0, None, 1, None, 2]


def test_levels_1_4_16_32_copy_and_bin(tmp_path):
    case = need(CASES / "level-factors-1-4-16-32")
    path = case / "levels_1_4_16_32.tif"
    levels = build_full(path, tmp_path / "l.ome.zarr", mpp=1.0)
    osr = openslide.OpenSlide(path)
    for cache_level, src_level in [(2, 1), (4, 2), (5, 3)]:
        w, h = osr.level_dimensions[src_level]
        stored = np.asarray(osr.read_region((0, 0), src_level, (w, h)))[..., :3]
        assert np.array_equal(levels[cache_level], stored), cache_level
    assert levels[5].shape[:2] == (48, 64)
    block = (levels[5] == (210, 110, 170)).all(axis=2)
    assert int(block.sum()) == 768 and block[12:36, 16:48].all()
    assert np.array_equal(levels[1], _mean2(levels[0]))
    assert np.array_equal(levels[3], _mean2(levels[2]))


def test_nodata_tiles_are_white_at_every_level(tmp_path):
    case = need(CASES / "slide-nodata-transparent-tiles")
    levels = build_full(case / "nodata_tiles.tif", tmp_path / "nd.ome.zarr", mpp=1.0)
    for lv in levels:
        assert int((lv == 0).all(axis=2).sum()) == 0
    tissue = (levels[0] == (200, 110, 170)).all(axis=2)
    assert int(tissue.sum()) == 70_000 and tissue[300:500, 350:700].all()


def test_boxes_exact_factor_two_levels(tmp_path):
    path = need(DATA / "slides/openslide-python-fixtures/boxes.tiff")
    levels = build_full(path, tmp_path / "b.ome.zarr", chunk=64, block=128, min_side=64)
    osr = openslide.OpenSlide(path)
    assert [lv.shape[:2] for lv in levels] == [
        (250, 300),
        (125, 150),
        (62, 75),
        (31, 37),
    ]
    for k in range(4):
        w, h = osr.level_dimensions[k]
        rgba = np.asarray(osr.read_region((0, 0), k, (w, h)))
        assert np.array_equal(levels[k], rgba[..., :3]), k


def test_background_chunks_are_not_written(tmp_path):
    ref = np.full((1024, 1024, 3), 240, np.uint8)
    ref[600:700, 100:200] = (180, 60, 140)
    slide = write_tiff(tmp_path / "one.tif", ref)
    out = tmp_path / "one.ome.zarr"
    store.create_image_store(out, "one", 1024, 1024, 0.5, 0.5, 1, chunk=256)
    mask = np.zeros((16, 16), bool)  # 64 level-0 px per mask px
    mask[600 // 64 : 700 // 64 + 1, 100 // 64 : 200 // 64 + 1] = True
    plan = pyramid.plan_blocks(1024, 1024, 1, [1], mask, 64.0, 256, 512, 0)
    pyramid.write_levels(plan, out, slide, None)
    chunks = sorted(
        p.relative_to(out / "0").as_posix()
        for p in (out / "0").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    assert chunks == ["0/2/0"]  # only the chunk (x 0-255, y 512-767) holds tissue
    level = zarr.open_array(str(out / "0"), mode="r", zarr_format=2)
    assert (np.asarray(level[:, 0:256, 512:768]) == 255).all()
    assert np.array_equal(
        np.asarray(level[:, 512:768, 0:256]).transpose(1, 2, 0), ref[512:768, 0:256]
    )
