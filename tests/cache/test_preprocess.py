"""End to end: real slides, failures inside a batch, resumability, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys

import h5py
import numpy as np
import openslide
import pytest
from shapely.geometry import box

from tests.cache.helpers import write_tiff
from tests.conftest import CASES, DATA, need
from wsi_dram.cache import pyramid, store
from wsi_dram.cache.manifest import read_manifest
from wsi_dram.cache.preprocess import PreprocessOptions, preprocess


def _tissue_tif(path, side=512, inset=100, **kwargs):
    """A side x side glass slide with one square of tissue ``inset`` px in."""
    rgb = np.full((side, side, 3), 240, np.uint8)
    rgb[inset : side - inset, inset : side - inset] = (170, 60, 150)
    return write_tiff(path, rgb, **kwargs)


def _asap(*regions):
    """ASAP XML of ``(group, x0, y0, x1, y1)`` rectangles."""
    parts = []
    for k, (group, x0, y0, x1, y1) in enumerate(regions):
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        coords = "".join(
            f'<Coordinate Order="{o}" X="{x}" Y="{y}"/>'
            for o, (x, y) in enumerate(corners)
        )
        parts.append(
            f'<Annotation Name="{k}" Type="Polygon" PartOfGroup="{group}">'
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )
    body = "".join(parts)
    return f"<ASAP_Annotations><Annotations>{body}</Annotations></ASAP_Annotations>"


FIXTURES = DATA / "slides/openslide-python-fixtures"


def _mean2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[1] // 2, a.shape[2] // 2
    s = a[:, : 2 * h, : 2 * w].astype(np.uint16)
    s = s[:, 0::2, 0::2] + s[:, 1::2, 0::2] + s[:, 0::2, 1::2] + s[:, 1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


@pytest.fixture(scope="module")
def cmu_batch(tmp_path_factory):
    """CMU-1-Small-Region between two broken slides, one preprocess batch."""
    cmu = need(DATA / "slides/aperio/CMU-1-Small-Region.svs")
    src = tmp_path_factory.mktemp("src")
    local = src / cmu.name
    shutil.copy(cmu, local)
    cache = tmp_path_factory.mktemp("cache")
    slides = [need(FIXTURES / "unopenable.tiff"), local, FIXTURES / "unreadable.svs"]
    rows = preprocess(slides, cache)
    return cache, local, rows


def test_batch_goes_on_after_bad_slides(cmu_batch):
    cache, _, rows = cmu_batch
    assert [(r.slide_id, r.status) for r in rows] == [
        ("unopenable", "failed"),
        ("CMU-1-Small-Region", "done"),
        ("unreadable", "failed"),
    ]
    assert "Unsupported TIFF compression" in rows[0].error and "\n" not in rows[0].error
    assert rows[2].error
    assert not (cache / "unopenable.ome.zarr").exists()
    manifest = {r.slide_id: r for r in read_manifest(cache / "manifest.csv")}
    assert manifest["CMU-1-Small-Region"].status == "done"
    assert manifest["CMU-1-Small-Region"].levels == 3
    assert manifest["unreadable"].status == "failed"


def test_cmu_pyramid_is_built_and_exact(cmu_batch):
    cache, local, rows = cmu_batch
    cached = store.open_cache(cache / "CMU-1-Small-Region.ome.zarr")
    assert (cached.width, cached.height, cached.mpp) == (
        2220,
        2967,
        pytest.approx(0.499),
    )
    assert [tuple(a.shape) for a in cached.levels] == [
        (3, 2967, 2220),
        (3, 1483, 1110),
        (3, 741, 555),
    ]
    level0 = np.asarray(cached.levels[0][...])
    level1 = np.asarray(cached.levels[1][...])
    assert np.array_equal(level1, _mean2(level0))
    assert np.array_equal(np.asarray(cached.levels[2][...]), _mean2(level1))
    ref = np.asarray(openslide.OpenSlide(local).read_region((0, 0), 0, (2220, 2967)))
    written = (level0 != 255).any(axis=0)
    assert written.mean() > 0.2
    assert np.array_equal(level0.transpose(1, 2, 0)[written], ref[..., :3][written])
    attrs = cached.attrs
    assert attrs["complete"] is True and attrs["source"]["size"] == local.stat().st_size
    assert attrs["source_level_downsamples"] == [1.0] and attrs["levels"] == 3
    assert attrs["tiles"] == rows[1].tiles > 0
    assert attrs["tissue_mm2"] == pytest.approx(rows[1].tissue_mm2)
    mask, ds = cached.tissue_mask()
    assert ds == 2 ** attrs["mask_level"] and mask.shape == (2967 // ds, 2220 // ds)
    assert cached.tumor_mask() is None
    with h5py.File(cache / "CMU-1-Small-Region.h5", "r") as f:
        coords = f["coords"][...]
        assert coords.shape == (rows[1].tiles, 2) and coords.dtype == np.int64
        assert (coords % 256 == 0).all() and f["coords"].attrs["patch_size"] == 256
        assert (f["tissue_fraction"][...] >= 0.25).all()
    assert (cache / "qc" / "CMU-1-Small-Region.png").stat().st_size > 1000


def test_unchanged_slide_is_skipped_and_changed_rebuilt(cmu_batch):
    cache, local, _ = cmu_batch
    zattrs = cache / "CMU-1-Small-Region.ome.zarr" / ".zattrs"
    before = zattrs.stat().st_mtime_ns
    rows = preprocess([local], cache)
    assert rows[0].status == "skipped" and rows[0].levels == 3
    assert zattrs.stat().st_mtime_ns == before
    stat = local.stat()
    os.utime(local, (stat.st_atime, stat.st_mtime + 10))
    assert preprocess([local], cache)[0].status == "done"
    assert (
        preprocess([local], cache, options=PreprocessOptions(force=True))[0].status
        == "done"
    )


def test_killed_run_leaves_no_finished_store(tmp_path, monkeypatch):
    slide = _tissue_tif(tmp_path / "kill.tif")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyramid, "write_levels", crash)
    with pytest.raises(KeyboardInterrupt):
        preprocess([slide], tmp_path / "cache")
    final = tmp_path / "cache" / "kill.ome.zarr"
    assert not final.exists() and not store.is_complete(final)
    monkeypatch.undo()
    rows = preprocess([slide], tmp_path / "cache")
    assert rows[0].status == "done" and store.is_complete(final)
    assert not (tmp_path / "cache" / ".kill.ome.zarr.partial").exists()


def test_tumour_label_and_fractions_from_asap(tmp_path):
    slide = _tissue_tif(tmp_path / "t.tif", 1024, 128, mpp=1.0)
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "t.xml").write_text(
        _asap(("_0", 256, 256, 768, 768), ("_2", 256, 256, 512, 512))
    )
    rows = preprocess(
        [slide], tmp_path / "cache", ann, PreprocessOptions(min_side=128, mask_mpp=16.0)
    )
    assert rows[0].status == "done", rows[0].error
    area = box(256, 256, 768, 768).difference(box(256, 256, 512, 512)).area
    assert rows[0].tumour_mm2 == pytest.approx(area / 1e6)
    cached = store.open_cache(tmp_path / "cache" / "t.ome.zarr")
    tumor, ds = cached.tumor_mask()
    assert ds == 16.0 and int(tumor.sum()) == area / 256
    assert cached.tumor_geometry.area == pytest.approx(area)
    with h5py.File(tmp_path / "cache" / "t.h5", "r") as f:
        coords, fractions = f["coords"][...].tolist(), f["tumor_fraction"][...]
    frac = {tuple(c): t for c, t in zip(coords, fractions, strict=True)}
    assert frac[(512, 512)] == 1.0 and frac[(512, 256)] == 1.0
    assert frac[(256, 256)] == 0.0


def test_blank_slide_fails_without_a_store(tmp_path):
    blank = need(CASES / "tissue-blank-slide-noise/blank_slide.tif")
    rows = preprocess([blank], tmp_path, options=PreprocessOptions(mpp=1.0))
    assert rows[0].status == "failed"
    assert rows[0].error == "no tissue found in blank_slide.tif"
    assert not (tmp_path / "blank_slide.ome.zarr").exists()
    assert not (tmp_path / "blank_slide.h5").exists()


def test_a_file_given_as_the_cache_folder_is_named_a_file(tmp_path):
    from wsi_dram.errors import CacheError

    not_a_folder = tmp_path / "slide.tif"
    not_a_folder.write_bytes(b"not a folder")
    with pytest.raises(CacheError, match="is a file, not a folder") as info:
        preprocess([tmp_path / "any.tif"], not_a_folder)
    assert str(not_a_folder) in str(info.value)
    assert not_a_folder.read_bytes() == b"not a folder"


def test_missing_mpp_fails_with_the_way_to_supply_it(tmp_path):
    path = need(CASES / "mpp-missing/no_resolution.tif")
    rows = preprocess([path], tmp_path)
    assert rows[0].status == "failed" and "--mpp" in rows[0].error
    assert "mpp" in rows[0].error


def test_cli_missing_path_and_empty_glob_exit_2(tmp_path, monkeypatch, capsys):
    from wsi_dram.cli import main

    for arg in [str(tmp_path / "nope.svs"), str(tmp_path / "*.svs")]:
        monkeypatch.setattr(
            sys, "argv", ["wsi-dram", "preprocess", arg, "--cache", str(tmp_path / "c")]
        )
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and arg in err


def test_cli_summary_and_nonzero_exit(tmp_path, monkeypatch, capsys):
    from wsi_dram.cli import main

    good = _tissue_tif(tmp_path / "good.tif")
    bad = need(FIXTURES / "unopenable.tiff")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "wsi-dram",
            "preprocess",
            str(good),
            str(bad),
            "--cache",
            str(tmp_path / "c"),
            "--workers",
            "1",
        ],
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert (
        "good" in out and "unopenable" in out and "1 done / 0 skipped / 1 failed" in out
    )
    attrs = json.loads((tmp_path / "c" / "good.ome.zarr" / ".zattrs").read_text())
    assert attrs["wsi_dram"]["complete"] is True


def test_a_changed_annotation_rebuilds_the_labels(tmp_path):
    slide = _tissue_tif(tmp_path / "a.tif", 1024, 128, mpp=1.0)
    ann = tmp_path / "ann"
    ann.mkdir()

    def square(group: str) -> str:
        return _asap((group, 256, 256, 768, 768))

    options = PreprocessOptions(min_side=128, mask_mpp=16.0, qc=False)
    cache = tmp_path / "cache"
    (ann / "a.xml").write_text(square("_0"))
    assert preprocess([slide], cache, ann, options)[0].tumour_mm2 == pytest.approx(
        512 * 512 / 1e6
    )
    assert preprocess([slide], cache, ann, options)[0].status == "skipped"
    # The same file with the region moved to the "not tumour" group: no tumour.
    (ann / "a.xml").write_text(square("_2"))
    row = preprocess([slide], cache, ann, options)[0]
    assert row.status == "done" and row.tumour_mm2 == 0.0
    # No annotation folder at all is a change too.
    (ann / "a.xml").write_text(square("_0"))
    assert preprocess([slide], cache, ann, options)[0].status == "done"
    assert preprocess([slide], cache, None, options)[0].status == "done"
    assert preprocess([slide], cache, None, options)[0].status == "skipped"


def test_a_file_in_place_of_a_partial_store_does_not_stop_the_batch(tmp_path):
    first = _tissue_tif(tmp_path / "p1.tif")
    second = _tissue_tif(tmp_path / "p2.tif")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".p1.ome.zarr.partial").write_text("not a store")
    rows = preprocess([first, second], cache, options=PreprocessOptions(qc=False))
    assert [r.status for r in rows] == ["done", "done"], [r.error for r in rows]
    assert store.is_complete(cache / "p1.ome.zarr")
    assert not (cache / ".p1.ome.zarr.partial").exists()


def test_a_file_named_like_the_store_is_left_alone_and_the_batch_goes_on(tmp_path):
    first = _tissue_tif(tmp_path / "f1.tif")
    second = _tissue_tif(tmp_path / "f2.tif")
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = cache / "f1.ome.zarr"
    mine.write_text("my notes")
    rows = preprocess([first, second], cache, options=PreprocessOptions(qc=False))
    assert [r.status for r in rows] == ["failed", "done"], [r.error for r in rows]
    assert str(mine) in rows[0].error and "is a file, not a cache store" in (
        rows[0].error
    )
    assert rows[0].error.startswith("f1.tif: ")
    assert mine.read_text() == "my notes"  # untouched, nothing beside it
    assert sorted(p.name for p in cache.iterdir() if "f1" in p.name) == ["f1.ome.zarr"]
    assert store.is_complete(cache / "f2.ome.zarr")
    by_id = {r.slide_id: r for r in read_manifest(cache / "manifest.csv")}
    assert by_id["f1"].status == "failed" and by_id["f2"].status == "done"


def test_two_files_with_one_slide_id_the_second_fails_naming_both(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _tissue_tif(tmp_path / "a" / "x.tif")
    b = _tissue_tif(tmp_path / "b" / "x.tif", inset=50)
    other = _tissue_tif(tmp_path / "y.tif")
    cache = tmp_path / "cache"
    # the same file named twice (x.tif and a glob) is cached once, not an error
    rows = preprocess([a, b, a, other], cache, options=PreprocessOptions(qc=False))
    assert [(r.slide_id, r.status) for r in rows] == [
        ("x", "done"),
        ("x", "failed"),
        ("y", "done"),
    ]
    assert str(a) in rows[1].error and str(b) in rows[1].error
    assert rows[1].source == str(b)
    manifest = {r.slide_id: r for r in read_manifest(cache / "manifest.csv")}
    assert manifest["x"].source == str(a) and manifest["x"].status == "done"
    # the store holds a/x.tif's pixels: tissue square 100 px in, not 50
    tissue = (512 - 200) ** 2 * 0.5**2 / 1e6
    assert rows[0].tissue_mm2 == pytest.approx(tissue, rel=0.1)


def test_a_failed_file_does_not_claim_its_slide_id(tmp_path):
    for folder in "abc":
        (tmp_path / folder).mkdir()
    broken = tmp_path / "a" / "x.tif"
    broken.write_bytes(b"not a slide at all")
    good = _tissue_tif(tmp_path / "b" / "x.tif")
    late = _tissue_tif(tmp_path / "c" / "x.tif", inset=50)
    cache = tmp_path / "cache"
    rows = preprocess([broken, good, late], cache, options=PreprocessOptions(qc=False))
    # every source keeps its own row, in input order
    assert [(r.source, r.status) for r in rows] == [
        (str(broken), "failed"),
        (str(good), "done"),
        (str(late), "failed"),
    ]
    assert "duplicate" not in rows[0].error
    # the third is refused naming the file that was cached, not the broken one
    assert rows[2].error == (
        f"{late}: duplicate slide id 'x', also the id of {good} (cached from that "
        "file); rename one of them"
    )
    manifest = read_manifest(cache / "manifest.csv")
    assert [(r.slide_id, r.source, r.status) for r in manifest] == [
        ("x", str(good), "done")
    ]
    # the store holds b/x.tif's pixels: tissue square 100 px in, not 50
    tissue = (512 - 200) ** 2 * 0.5**2 / 1e6
    assert rows[1].tissue_mm2 == pytest.approx(tissue, rel=0.1)
    assert store.is_complete(cache / "x.ome.zarr")


def test_a_truncated_slide_fails_clearly_even_with_mpp(tmp_path):
    whole = _tissue_tif(tmp_path / "whole.tif")
    import tifffile

    rgb = np.full((512, 512, 3), 240, np.uint8)
    rgb[100:412, 100:412] = (170, 60, 150)
    two = tmp_path / "two.tif"
    with tifffile.TiffWriter(two) as writer:  # stripped: OpenSlide hands it to Pillow
        writer.write(rgb, photometric="rgb", metadata=None)
        writer.write(rgb[::4, ::4], photometric="rgb", metadata=None)
    with tifffile.TiffFile(two) as tif:
        second_ifd = tif.pages[1].offset
    cut = tmp_path / "cut.tif"
    cut.write_bytes(two.read_bytes()[:second_ifd])  # page 1 whole, page 2 gone
    cache = tmp_path / "cache"
    rows = preprocess([cut, whole], cache, options=PreprocessOptions(mpp=0.5, qc=False))
    assert [r.status for r in rows] == ["failed", "done"], [r.error for r in rows]
    assert rows[0].error.startswith("cut.tif: file is truncated or damaged")
    assert not (cache / "cut.ome.zarr").exists() and not (cache / "cut.h5").exists()
