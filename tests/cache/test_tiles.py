"""Tile grid (CLAM layout), fractions, rasterisation and the manifest file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from wsi_dram.cache import tiles
from wsi_dram.cache.manifest import ManifestRow, read_manifest, update_manifest
from wsi_dram.errors import CacheError


def test_rasterize_counts_pixel_centres_and_holes():
    square = box(0, 0, 80, 80).difference(box(20, 20, 40, 40))  # level-0 px
    island = box(24, 24, 32, 32)
    raster = tiles.rasterize(square.union(island), (24, 24), 4.0)
    # 20 x 20 label px of 4 level-0 px; hole 5 x 5; island 2 x 2 back inside it.
    assert int(raster.sum()) == 400 - 25 + 4
    assert raster[0, 0] == 1 and raster[5, 5] == 0 and raster[6, 6] == 1
    assert int(tiles.rasterize(Polygon(), (4, 4), 1.0).sum()) == 0


def test_resample_mask_nearest():
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True  # level-0 x 16-23, y 8-15 at downsample 8
    out = tiles.resample_mask(mask, 8.0, (8, 8), 4.0)
    assert out.sum() == 4 and out[2:4, 4:6].all()


def test_tile_grid_fractions_and_h5_layout(tmp_path):
    tissue = np.zeros((64, 64), np.uint8)
    tissue[:32, :] = 1  # top half of a 1024 px slide (16 px per label px)
    tissue[:8, 16:32] = 0  # a quarter of tile (256, 0) missing
    tumor = np.zeros_like(tissue)
    tumor[:32, :8] = 1  # left half of the first tile column
    grid = tiles.tile_grid(1024, 1024, tissue, tumor, 16.0, 256, 0, min_tissue=0.25)
    assert grid.coords.tolist() == [
        [0, 0],
        [256, 0],
        [512, 0],
        [768, 0],
        [0, 256],
        [256, 256],
        [512, 256],
        [768, 256],
    ]
    assert grid.tissue_fraction.tolist() == [1, 0.5, 1, 1, 1, 1, 1, 1]
    assert grid.tumor_fraction.tolist() == [0.5, 0, 0, 0, 0.5, 0, 0, 0]
    path = tmp_path / "s.h5"
    tiles.write_tiles(path, grid, {"slide_id": "s"})
    with h5py.File(path, "r") as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (8, 2)
        assert f["coords"].attrs["patch_size"] == 256
        assert f["coords"].attrs["patch_level"] == 0
        assert f["tissue_fraction"].dtype == np.float32
    back = tiles.read_tiles(path)
    assert np.array_equal(back.coords, grid.coords) and back.attrs["slide_id"] == "s"
    assert np.array_equal(back.tumor_fraction, grid.tumor_fraction)
    with pytest.raises(CacheError):
        tiles.read_tiles(tmp_path / "missing.h5")


def test_manifest_update_is_by_slide_id(tmp_path):
    update_manifest(
        tmp_path,
        [
            ManifestRow("a", "a.tif", "done", width=10, mpp=0.5),
            ManifestRow("b", "b.tif", "failed", error="bad\nthing"),
        ],
    )
    update_manifest(tmp_path, [ManifestRow("a", "a.tif", "skipped", width=10)])
    rows = read_manifest(tmp_path / "manifest.csv")
    assert [(r.slide_id, r.status) for r in rows] == [("a", "skipped"), ("b", "failed")]
    assert rows[1].error == "bad thing"
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert header == (
        "slide_id,source,status,error,width,height,mpp,levels,"
        "tissue_mm2,tumour_mm2,tiles,seconds"
    )
