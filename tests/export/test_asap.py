"""ASAP XML re-read (ElementTree, and our annotation reader when present)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from tests.export.conftest import SPOT, SWAPPED
from wsi_dram.export.asap import asap_parts, hole_free_parts, write_asap_xml
from wsi_dram.export.heatmap import Heatmap, heatmap_polygons
from wsi_dram.slides.annotations import read_annotations


def read_groups(path: Path) -> dict[str, list[Polygon]]:
    """Polygons per ``PartOfGroup``, parsed independently of our writer."""
    groups: dict[str, list[Polygon]] = {}
    for node in ET.parse(path).getroot().iter("Annotation"):
        assert node.get("Type") == "Polygon"
        coords = sorted(node.iter("Coordinate"), key=lambda c: int(c.get("Order")))
        ring = [(float(c.get("X")), float(c.get("Y"))) for c in coords]
        groups.setdefault(node.get("PartOfGroup"), []).append(Polygon(ring))
    return groups


def camelyon_region(path: Path) -> shapely.Geometry:
    """Camelyon16 rule: union of ``_0`` and ``_1`` minus union of ``_2``."""
    groups = read_groups(path)
    tumour = shapely.union_all(groups.get("_0", []) + groups.get("_1", []))
    return tumour.difference(shapely.union_all(groups.get("_2", [])))


def nested_region() -> MultiPolygon:
    """Ring with a hole holding an island, which has a hole, plus a far square."""
    probs = np.zeros((9, 12), dtype=np.float32)
    probs[0:9, 0:9] = 0.9
    probs[1:8, 1:8] = 0.0  # hole
    probs[2:7, 2:7] = 0.9  # island in the hole
    probs[4, 4] = 0.0  # hole in the island
    probs[3:6, 10:12] = 0.8
    heat = Heatmap(probs, (0, 0), 64, 64, 12 * 64, 9 * 64, 0.5, "nest")
    return heatmap_polygons(heat, 0.5)


def test_wide_slide_polygons_contain_spot(
    wide_heatmap: Heatmap, tmp_path: Path
) -> None:
    polygons = heatmap_polygons(wide_heatmap, 0.5)
    path = write_asap_xml(polygons, tmp_path / "wide.xml")
    region = camelyon_region(path)
    assert region.contains(Point(SPOT)) and not region.contains(Point(SWAPPED))
    assert region.symmetric_difference(polygons).area == pytest.approx(0.0)


def test_groups_declared_like_camelyon(tmp_path: Path) -> None:
    path = write_asap_xml(nested_region(), tmp_path / "n.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "ASAP_Annotations"
    groups = {g.get("Name"): g.get("PartOfGroup") for g in root.iter("Group")}
    assert groups == {"_0": "None", "_1": "None", "_2": "None"}
    used = {a.get("PartOfGroup") for a in root.iter("Annotation")}
    assert used == {"_0", "_2"}
    # Holes subtract: nothing written in _0 has a hole (ASAP polygons cannot).
    assert all(len(p.interiors) == 0 for ps in read_groups(path).values() for p in ps)


def test_holes_and_islands_round_trip(tmp_path: Path) -> None:
    region = nested_region()
    assert sum(len(p.interiors) for p in region.geoms) == 2
    path = write_asap_xml(region, tmp_path / "n.xml")
    back = camelyon_region(path)
    assert back.symmetric_difference(region).area == pytest.approx(0.0, abs=1e-6)
    # Spot checks by hand (cell = 64 px): ring, hole, island, island's hole.
    assert back.contains(Point(32, 32))
    assert not back.contains(Point(96, 96))
    assert back.contains(Point(160, 160))
    assert not back.contains(Point(4.5 * 64, 4.5 * 64))


def test_hole_free_parts_cover_polygon() -> None:
    outer = box(0, 0, 100, 100)
    poly = outer.difference(box(10, 10, 30, 30)).difference(box(60, 50, 90, 80))
    parts = hole_free_parts(poly)
    assert all(not p.interiors for p in parts)
    assert shapely.union_all(parts).symmetric_difference(poly).area == pytest.approx(0)
    assert sum(p.area for p in parts) == pytest.approx(poly.area)


def test_asap_parts_of_empty_geometry(tmp_path: Path) -> None:
    assert asap_parts(MultiPolygon()) == ([], [])
    path = write_asap_xml(MultiPolygon(), tmp_path / "empty.xml")
    assert read_groups(path) == {}


def test_our_annotation_reader_gives_same_geometry(tmp_path: Path) -> None:
    region = nested_region()
    path = write_asap_xml(region, tmp_path / "n.xml")
    annotations = read_annotations(path)
    assert annotations.tumor.symmetric_difference(region).area == pytest.approx(
        0.0, abs=1e-6
    )


def test_our_annotation_reader_on_wide_slide(
    wide_heatmap: Heatmap, tmp_path: Path
) -> None:
    polygons = heatmap_polygons(wide_heatmap, 0.5)
    path = write_asap_xml(polygons, tmp_path / "wide.xml")
    annotations = read_annotations(path, slide_size=(20000, 6000))
    assert annotations.tumor.contains(Point(SPOT))
    assert not annotations.tumor.contains(Point(SWAPPED))
    assert annotations.tumor.symmetric_difference(polygons).area == pytest.approx(0.0)
