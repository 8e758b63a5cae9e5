"""NGFF metadata (scale + half-pixel translation), codecs, open_cache, labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from tests.conftest import CASES, need
from wsi_dram.cache import store
from wsi_dram.errors import CacheError, ConfigError


def test_translations_follow_the_half_pixel_rule():
    case = need(CASES / "ome-zarr-half-pixel-translation")
    expected = json.loads((case / "expected_multiscales.json").read_text())
    want = expected["multiscales"][0]["datasets"]
    got = store.multiscales_metadata("s", 0.25, 0.25, [1.0, 2.0, 4.0, 8.0])[0]
    assert [a["name"] for a in got["axes"]] == ["c", "y", "x"]
    assert got["version"] == "0.4"
    for mine, ref in zip(got["datasets"], want, strict=True):
        scale, shift = mine["coordinateTransformations"]
        assert scale["type"] == "scale" and shift["type"] == "translation"
        ref_scale = ref["coordinateTransformations"][0]["scale"]
        ref_shift = (
            ref["coordinateTransformations"][1]["translation"]
            if len(ref["coordinateTransformations"]) > 1
            else [0.0, 0.0]
        )
        assert scale["scale"][0] == 1.0 and shift["translation"][0] == 0.0
        assert np.allclose(scale["scale"][1:], ref_scale, atol=1e-12)
        assert np.allclose(shift["translation"][1:], ref_shift, atol=1e-12)
    # Factor-4 pyramid from the case: translations 0.375 and 1.875.
    four = store.multiscales_metadata("s", 0.25, 0.25, [1.0, 4.0, 16.0], channel=False)
    shifts = [
        d["coordinateTransformations"][1]["translation"] for d in four[0]["datasets"]
    ]
    assert np.allclose(shifts, [[0, 0], [0.375, 0.375], [1.875, 1.875]], atol=1e-12)


def test_written_store_metadata_and_binned_centres(tmp_path):
    path = tmp_path / "s.ome.zarr"
    store.create_image_store(path, "s", 1000, 600, 0.25, 0.5, 3, chunk=256)
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    for k, ds in enumerate(ms["datasets"]):
        scale = ds["coordinateTransformations"][0]["scale"]
        shift = ds["coordinateTransformations"][1]["translation"]
        # A level-k pixel j is the mean of level-0 pixels j*2**k .. j*2**k+2**k-1:
        # its centre is the mean of their centres.
        centre_x0 = np.mean(np.arange(2**k) * 0.25)
        centre_y0 = np.mean(np.arange(2**k) * 0.5)
        assert shift[2] == pytest.approx(centre_x0) and shift[1] == pytest.approx(
            centre_y0
        )
        assert scale == [1.0, 0.5 * 2**k, 0.25 * 2**k]
    assert [c["color"] for c in attrs["omero"]["channels"]] == [
        "FF0000",
        "00FF00",
        "0000FF",
    ]
    meta = json.loads((path / "2" / ".zarray").read_text())
    assert meta["shape"] == [3, 150, 250] and meta["fill_value"] == 255
    assert meta["dimension_separator"] == "/" and meta["zarr_format"] == 2


def test_level_count_stops_below_min_side():
    assert store.level_count_for(2220, 2967) == 3  # 2967, 1483, 741
    assert store.level_count_for(300, 250) == 1
    assert store.level_count_for(100_000, 80_000) == 8  # 100000 >> 7 = 781


@pytest.mark.parametrize("codec", ["zstd", "jpeg"])
def test_codecs_round_trip(tmp_path, codec):
    path = tmp_path / f"{codec}.ome.zarr"
    root = store.create_image_store(path, "c", 300, 200, 1.0, 1.0, 1, 128, codec)
    yy, xx = np.mgrid[0:200, 0:300]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) // 4 % 256]).astype(np.uint8)
    root["0"][...] = rgb
    back = np.asarray(zarr.open_array(str(path / "0"), mode="r", zarr_format=2)[...])
    err = np.abs(back.astype(int) - rgb).mean()
    assert err == 0 if codec == "zstd" else err < 3
    if codec == "jpeg":  # a chunk file is a JPEG stream (SOI marker), interleaved RGB
        data = (path / "0" / "0" / "0" / "0").read_bytes()
        assert data[:2] == b"\xff\xd8"
    with pytest.raises(ConfigError):
        store.make_compressor("png", 128)


@pytest.mark.parametrize("codec", ["zstd", "jpeg"])
def test_chunk_writer_writes_the_bytes_zarr_writes(tmp_path, codec):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 200, size=(200, 300, 3), dtype=np.uint8)  # (h, w, 3)
    rgb[:, 256:] = 255  # chunk (256, 0) is all white: never written
    rgb[128:, 256:] = (10, 20, 30)  # ... except chunk (256, 128), an edge chunk
    paths = [tmp_path / f"{name}.ome.zarr" for name in ("zarr", "direct")]
    for path in paths:
        store.create_image_store(path, "c", 300, 200, 1.0, 1.0, 1, 128, codec)
    zarr.open_array(str(paths[0] / "0"), mode="r+", zarr_format=2)[...] = rgb.transpose(
        2, 0, 1
    )
    io = store.ChunkIO(paths[1] / "0")
    written = [
        io.write(cx, cy, rgb[cy : cy + 128, cx : cx + 128])
        for cy in (0, 128)
        for cx in (0, 128, 256)
    ]
    assert written == [True, True, False, True, True, True]

    def files(path):
        root = path / "0"
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    by_zarr, direct = files(paths[0]), files(paths[1])
    assert sorted(direct) == ["0/0/0", "0/0/1", "0/1/0", "0/1/1", "0/1/2"]
    assert direct == by_zarr
    back = np.asarray(zarr.open_array(str(paths[1] / "0"), mode="r")[...])
    assert np.array_equal(io.read_region(0, 0, 300, 200), back.transpose(1, 2, 0))
    if codec == "zstd":
        assert np.array_equal(back.transpose(1, 2, 0), rgb)
    assert (io.read(256, 0) == 255).all()  # absent chunk reads white


def test_chunk_reader_names_a_corrupted_chunk(tmp_path):
    path = tmp_path / "c.ome.zarr"
    store.create_image_store(path, "c", 256, 256, 1.0, 1.0, 1, 128, "zstd")
    io = store.ChunkIO(path / "0")
    io.write(0, 0, np.zeros((128, 128, 3), np.uint8))
    key = path / "0" / "0" / "0" / "0"
    key.write_bytes(key.read_bytes()[:10])
    with pytest.raises(CacheError) as err:
        io.read(0, 0)
    assert str(err.value.path) == str(key)


def test_open_cache_refuses_missing_incomplete_and_foreign(tmp_path):
    with pytest.raises(CacheError, match="no such cache"):
        store.open_cache(tmp_path / "none.ome.zarr")
    path = tmp_path / "x.ome.zarr"
    root = store.create_image_store(path, "x", 64, 64, 1.0, 1.0, 1, 64)
    with pytest.raises(CacheError, match="not a wsi-dram"):
        store.open_cache(path)
    root.attrs["wsi_dram"] = {
        "slide_id": "x",
        "width": 64,
        "height": 64,
        "mpp": 1.0,
        "complete": False,
    }
    with pytest.raises(CacheError, match="incomplete") as err:
        store.open_cache(path)
    assert str(path) in str(err.value)


def test_write_label_and_cached_slide(tmp_path):
    path = tmp_path / "x.ome.zarr"
    root = store.create_image_store(path, "x", 512, 256, 0.5, 0.5, 2, 128)
    root["1"][:, 0:128, 0:128] = 7
    root.attrs["wsi_dram"] = {
        "slide_id": "x",
        "width": 512,
        "height": 256,
        "mpp": 0.5,
        "complete": True,
        "mask_level": 2,
        "tissue_geojson": {
            "type": "Polygon",
            "coordinates": [[[0, 0], [8, 0], [8, 8], [0, 0]]],
        },
    }
    mask = np.zeros((64, 128), np.uint8)
    mask[10:20, 30:40] = 1
    store.write_label(path, "tissue", mask, 4.0, min_side=16)
    cached = store.open_cache(path)
    got, ds = cached.tissue_mask()
    assert ds == 4.0 and np.array_equal(got, mask > 0)
    assert cached.tumor_mask() is None and cached.tumor_geometry is None
    assert cached.tissue_geometry.area == pytest.approx(32.0)
    lab = json.loads((path / "labels" / "tissue" / ".zattrs").read_text())
    assert lab["image-label"]["source"]["image"] == "../../"
    shifts = [
        d["coordinateTransformations"][1]["translation"]
        for d in lab["multiscales"][0]["datasets"]
    ]
    # label scales 2, 4, 8, 16 um (128 -> 16 px); translation (s - 0.5) / 2
    assert shifts == [[0.75, 0.75], [1.75, 1.75], [3.75, 3.75], [7.75, 7.75]]
    assert json.loads((path / "labels" / ".zattrs").read_text())["labels"] == ["tissue"]
    thumb, tds = cached.thumbnail()
    assert (
        thumb.shape == (128, 256, 3) and tds == 2.0 and (thumb[:128, :128] == 7).all()
    )
    region = cached.read_region(-2, 0, 1, 4, 2)  # level-0 x -2 -> level-1 x -1
    assert (region[:, 0] == 255).all() and (region[:, 1:] == 7).all()


def test_ome_zarr_reader_sees_the_levels(tmp_path):
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    path = tmp_path / "r.ome.zarr"
    store.create_image_store(path, "r", 900, 700, 0.5, 0.5, 3, 128)
    nodes = list(reader.Reader(io.parse_url(str(path)))())
    shapes = [tuple(d.shape) for d in nodes[0].data]
    assert shapes == [(3, 700, 900), (3, 350, 450), (3, 175, 225)]
