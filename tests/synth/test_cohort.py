"""The synthetic cohort, checked through OpenSlide, ElementTree, shapely and PIL."""

from __future__ import annotations

import csv
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import typer
from PIL import Image, ImageDraw
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from typer.testing import CliRunner

from wsi_dram.cli import app
from wsi_dram.errors import DataError
from wsi_dram.synth import SynthSlide, make_cohort, make_layout, make_slide

SIZE = (4096, 3072)
SEED = 3


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[SynthSlide]:
    out = tmp_path_factory.mktemp("cohort")
    return make_cohort(out, slides=4, size=SIZE, seed=SEED)


def _read_asap(path: Path) -> tuple[BaseGeometry, dict[str, int]]:
    """Tumour geometry (union of _0 minus union of _2) and ring counts per group."""
    groups: dict[str, list[Polygon]] = {"_0": [], "_2": []}
    for ann in ET.parse(path).getroot().iter("Annotation"):
        points = [
            (float(c.get("X", "")), float(c.get("Y", "")))
            for c in ann.iter("Coordinate")
        ]
        groups[ann.get("PartOfGroup", "")].append(Polygon(points))
    tumour = shapely.union_all(groups["_0"]).difference(shapely.union_all(groups["_2"]))
    return tumour, {k: len(v) for k, v in groups.items()}


def _mask(geom: BaseGeometry, level: int, size: tuple[int, int]) -> np.ndarray:
    """PIL raster of a geometry at a level (an independent rasteriser, ±1 px)."""
    f = 2**level
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    for poly in getattr(geom, "geoms", [geom]):
        draw.polygon(
            [(x / f - 0.5, y / f - 0.5) for x, y in poly.exterior.coords], fill=1
        )
        for ring in poly.interiors:
            draw.polygon([(x / f - 0.5, y / f - 0.5) for x, y in ring.coords], fill=0)
    return np.asarray(image).astype(bool)


def test_labels_csv_matches_annotations(cohort: list[SynthSlide]) -> None:
    out = cohort[0].path.parent
    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["slide_id"] for r in rows] == [
        "synth_000",
        "synth_001",
        "synth_002",
        "synth_003",
    ]
    for row in rows:
        has_xml = (out / f"{row['slide_id']}.xml").exists()
        assert row["label"] == ("1" if has_xml else "0")
    assert sum(r["label"] == "1" for r in rows) == 2  # round(4 * 0.5)
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == [
        f"synth_00{i}.tif" for i in range(4)
    ]


def test_openslide_opens_every_slide(cohort: list[SynthSlide]) -> None:
    for slide in cohort:
        assert openslide.OpenSlide.detect_format(str(slide.path)) == "generic-tiff"
        with openslide.OpenSlide(str(slide.path)) as osr:
            assert osr.dimensions == SIZE
            # 4096 -> 256 px: 5 levels, exact factors of two.
            assert osr.level_count == 5
            assert osr.level_downsamples == (1.0, 2.0, 4.0, 8.0, 16.0)
            assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
            assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.5)


def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    size = (1536, 1024)
    make_slide(a, "s", 5, size, seed=11, tumour=True)
    make_slide(b, "s", 5, size, seed=11, tumour=True, workers=1)
    make_slide(c, "s", 5, size, seed=12, tumour=True)
    digest = {
        f: hashlib.sha256((f / "s.tif").read_bytes()).hexdigest() for f in (a, b, c)
    }
    assert digest[a] == digest[b]
    assert (a / "s.xml").read_bytes() == (b / "s.xml").read_bytes()
    assert digest[a] != digest[c]


def test_tumour_polygons_lie_on_tissue_and_match_pixels(
    cohort: list[SynthSlide],
) -> None:
    tumour_slides = [s for s in cohort if s.label == 1]
    assert len(tumour_slides) == 2
    for slide in tumour_slides:
        assert slide.annotation is not None
        tumour, counts = _read_asap(slide.annotation)
        index = int(slide.slide_id.split("_")[1])
        layout = make_layout(SEED, index, SIZE, tumour=True)
        assert counts["_0"] >= 1
        assert tumour.area == pytest.approx(slide.tumour_area_px, rel=1e-6)
        assert tumour.difference(layout.tissue).area < 1e-6 * tumour.area

        # Pixels under the (eroded) tumour are tissue, not glass: level 2.
        with openslide.OpenSlide(str(slide.path)) as osr:
            size = osr.level_dimensions[2]
            rgb = np.asarray(osr.read_region((0, 0), 2, size).convert("RGB"))
        inside = ndimage.binary_erosion(_mask(tumour, 2, size), iterations=2)
        assert inside.sum() > 500
        assert (rgb[inside].min(axis=1) < 230).mean() > 0.99


def test_some_tumours_have_holes_and_some_slides_have_pen_or_border() -> None:
    layouts = [make_layout(SEED, i, SIZE, tumour=True) for i in range(12)]
    assert any(layout.tumour_holes for layout in layouts)
    pens = [layout for layout in layouts if layout.pen]
    assert pens and any(layout.border is not None for layout in layouts)
    for layout in pens:
        for ink, _ in layout.pen:
            # Pen ink stays on the glass, at least 100 µm (200 px) off tissue.
            assert ink.distance(layout.tissue) >= 200 - 1e-6
            assert shapely.box(0, 0, *SIZE).contains(ink)
    for layout in layouts:
        # Every _2 ring lies inside some _0 ring.
        outlines = shapely.union_all([Polygon(r) for r in layout.tumour_outlines])
        for ring in layout.tumour_holes:
            assert outlines.contains(Polygon(ring))


def _lag_correlation(r: np.ndarray, mask: np.ndarray, lag: int) -> float:
    """Correlation of a channel with itself ``lag`` px to the right, inside mask."""
    both = mask[:, :-lag] & mask[:, lag:]
    return float(np.corrcoef(r[:, :-lag][both], r[:, lag:][both])[0, 1])


def test_tumour_looks_like_a_follicle_except_at_high_magnification(
    cohort: list[SynthSlide],
) -> None:
    slide = next(s for s in cohort if s.label == 1)
    assert slide.annotation is not None and slide.detail_levels == 3
    tumour, _ = _read_asap(slide.annotation)
    layout = make_layout(SEED, int(slide.slide_id[-3:]), SIZE, tumour=True)
    follicles = layout.follicles
    assert 3 <= len(follicles.geoms) <= 6
    assert follicles.intersection(tumour).area == 0.0
    assert follicles.difference(layout.tissue).area < 1e-6 * follicles.area
    with openslide.OpenSlide(str(slide.path)) as osr:
        for level in range(5):
            size = osr.level_dimensions[level]
            rgb = np.asarray(osr.read_region((0, 0), level, size).convert("RGB"))
            rgb = rgb.astype(np.float64)
            margin = max(1, 8 >> level)

            in_tumour, in_follicle, in_tissue = (
                ndimage.binary_erosion(_mask(g, level, size), iterations=margin)
                for g in (tumour, follicles, layout.tissue)
            )
            near = ndimage.binary_dilation(
                _mask(tumour.union(follicles), level, size),
                iterations=max(2, 40 >> level),
            )
            normal = in_tissue & ~near
            assert in_tumour.sum() > 100 and in_follicle.sum() > 100
            assert normal.sum() > 1000

            # At every level a tumour has a follicle's mean colour per area ...
            mean_t, mean_f = rgb[in_tumour].mean(axis=0), rgb[in_follicle].mean(axis=0)
            assert np.abs(mean_t - mean_f).max() < 4.0, (level, mean_t, mean_f)
            # ... and both are darker than normal tissue: a spot seen at low power.
            assert (rgb[normal].mean(axis=0) - mean_f)[0] > 20.0, level
            red = rgb[..., 0]
            if level < 3:
                # Nuclei drawn: a tumour's large nuclei span several pixels, a
                # follicle's small ones hardly one step (5 µm at level 0).
                lag = max(1, 6 >> level)
                corr_t = _lag_correlation(red, in_tumour, lag)
                corr_f = _lag_correlation(red, in_follicle, lag)
                assert corr_t - corr_f > 0.15, (level, corr_t, corr_f)
            else:
                # No nuclei: only the smooth stain density and pixel noise remain.
                assert red[in_tumour].std() < 8 and red[in_follicle].std() < 8


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="too small"):
        make_cohort(tmp_path, slides=1, size=(512, 4096), seed=0)
    with pytest.raises(DataError, match="too large; each side must be <= 250000"):
        make_cohort(tmp_path / "big", slides=1, size=(4096, 250_001), seed=0)
    assert not (tmp_path / "big").exists()  # refused before any file
    with pytest.raises(DataError, match="at least one"):
        make_cohort(tmp_path, slides=0, size=SIZE, seed=0)


def test_cli_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = CliRunner().invoke(
        app,
        [
            "synth",
            "--out",
            str(out),
            "--slides",
            "2",
            "--size",
            "1024",
            "1024",
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "labels.csv").read_text().splitlines() == [
        "slide_id,label",
        *[f"synth_00{i},{int((out / f'synth_00{i}.xml').exists())}" for i in range(2)],
    ]
    with openslide.OpenSlide(str(out / "synth_000.tif")) as osr:
        assert osr.level_dimensions == ((1024, 1024), (512, 512), (256, 256))


def test_cli_refuses_an_unknown_compression_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = CliRunner().invoke(
        app,
        ["synth", "--out", str(out), "--size", "1024", "1024", "--compression", "lzw"],
    )
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == (
        "compression 'lzw' is not one of jpeg, zlib, deflate, none"
    )
    assert not out.exists()


def test_cli_help_lists_exactly_the_accepted_compressions() -> None:
    from wsi_dram.slides.tiff_writer import _COMPRESSIONS

    command = typer.main.get_command(app)
    synth = command.commands["synth"]  # type: ignore[attr-defined]
    (option,) = [p for p in synth.params if p.name == "compression"]
    assert set(_COMPRESSIONS) == {"jpeg", "zlib", "deflate", "none"}
    assert option.help.startswith("TIFF tiles: jpeg, zlib, deflate, none ")
