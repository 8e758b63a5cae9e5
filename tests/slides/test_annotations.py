"""Annotation reader: field cases, real Camelyon/QuPath files, repairs and errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box, shape

from tests.conftest import CASES, DATA, need
from wsi_dram.errors import AnnotationError
from wsi_dram.slides.annotations import (
    DEFAULT_GROUP_MAP,
    find_annotation,
    read_annotations,
)

DEGENERATE = CASES / "asap-xml-degenerate-and-types"
QUPATH_CASE = CASES / "qupath-geojson-container-classification"
ANN = DATA / "annotations"


def _slide_dims(folder: Path) -> tuple[int, int]:
    dims = json.loads(need(folder / "slide_dims.json").read_text())
    return dims["width"], dims["height"]


def _asap(path: Path, annotations: list[tuple[str, str, str, list[str]]]) -> Path:
    """Write a minimal ASAP XML: (name, type, group, ["x y", ...]) per annotation."""
    body = []
    for name, kind, group, points in annotations:
        coords = "".join(
            f'<Coordinate Order="{i}" X="{p.split()[0]}" Y="{p.split()[1]}" />'
            for i, p in enumerate(points)
        )
        body.append(
            f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" '
            f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>'
        )
    path.write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(body)
        + "</Annotations><AnnotationGroups /></ASAP_Annotations>"
    )
    return path


# -- ASAP case -------------------------------------------------------------------


def test_degenerate_and_types_case() -> None:
    path = need(DEGENERATE / "degenerate_and_types.xml")
    result = read_annotations(path, slide_size=_slide_dims(DEGENERATE))

    assert result.tumor_area_px == 100_000
    expected = MultiPolygon(
        [box(100, 100, 300, 300), box(500, 500, 700, 600), box(600, 100, 800, 300)]
    )
    assert result.tumor.symmetric_difference(expected).area == 0

    assert len(result.warnings) == 4
    for name in ("two_points", "collinear", "no_coordinates", "a_spline"):
        [line] = [w for w in result.warnings if f"'{name}'" in w]
        assert "degenerate_and_types.xml" in line
    assert "approximated" in next(w for w in result.warnings if "a_spline" in w)

    assert sorted(a.name for a in result.non_area) == [
        "a_dot",
        "a_measurement",
        "a_pointset",
    ]
    assert [a.name for a in result.lines] == ["a_measurement"]
    # Neither the dot nor the PointSet's triangle is area.
    triangle = Polygon([(600, 600), (700, 600), (650, 700)])
    assert result.tumor.intersection(triangle).area == 0
    assert not result.tumor.contains(Point(420, 420))
    assert result.polygons_per_group == {"_0": 3}
    assert result.repairs == []


def test_exclusion_subtracted_whatever_the_order(tmp_path: Path) -> None:
    square = ["0 0", "100 0", "100 100", "0 100"]
    hole = ["25 25", "75 25", "75 75", "25 75"]
    for order in ("exclusion_first", "tumour_first"):
        items = [("t", "Polygon", "_0", square), ("h", "Polygon", "_2", hole)]
        if order == "exclusion_first":
            items.reverse()
        result = read_annotations(_asap(tmp_path / f"{order}.xml", items))
        assert result.tumor_area_px == 100 * 100 - 50 * 50
        assert result.regions["exclusion"].area == 2500


def test_camelyon16_test_exclusion_group_names(tmp_path: Path) -> None:
    square = ["0 0", "100 0", "100 100", "0 100"]
    hole = ["0 0", "10 0", "10 10", "0 10"]
    path = _asap(
        tmp_path / "c16.xml",
        [("a", "Polygon", "Tumor", square), ("b", "Polygon", "Exclusion", hole)],
    )
    assert read_annotations(path).tumor_area_px == 9900
    custom = read_annotations(path, group_map={"Tumor": "tumor"})
    assert custom.tumor_area_px == 10_000
    assert custom.regions["Exclusion"].area == 100


def test_self_intersection_repaired_and_counted(tmp_path: Path) -> None:
    bowtie = ["0 0", "100 100", "100 0", "0 100"]
    result = read_annotations(
        _asap(tmp_path / "b.xml", [("bow", "Polygon", "_0", bowtie)])
    )
    assert len(result.repairs) == 1 and "make_valid" in result.repairs[0]
    assert "'bow'" in result.repairs[0]
    # Two triangles of 50 x 100 / 2 each.
    assert result.tumor_area_px == pytest.approx(5000)


def test_points_outside_slide_clipped_and_counted(tmp_path: Path) -> None:
    square = ["-50 -50", "100 -50", "100 100", "-50 100"]
    dots = ["10 10", "500 500"]
    path = _asap(
        tmp_path / "c.xml",
        [("s", "Polygon", "_0", square), ("d", "PointSet", "_0", dots)],
    )
    result = read_annotations(path, slide_size=(200, 200))
    assert result.tumor_area_px == 100 * 100
    assert len(result.repairs) == 2
    assert any("3 vertex/vertices outside" in r for r in result.repairs)
    assert result.points[0].geometry.equals(Point(10, 10))
    unclipped = read_annotations(path)
    assert unclipped.tumor_area_px == 150 * 150 and unclipped.repairs == []


def test_wsp_example_decimal_commas_inside_slide() -> None:
    path = need(ANN / "asap" / "wsp_example.xml")
    root = ET.parse(path).getroot()
    ring = [
        (
            float(c.get("X", "").replace(",", ".")),
            float(c.get("Y", "").replace(",", ".")),
        )
        for c in root.iter("Coordinate")
    ]
    expected = Polygon(ring)

    result = read_annotations(path, slide_size=(1472, 690))
    # Group "None" is exclusion (CAMELYON convention): no tumour, and a warning.
    assert result.tumor.is_empty
    assert result.regions["exclusion"].area == pytest.approx(expected.area)
    assert any("'None'" in w for w in result.warnings)
    x0, y0, x1, y1 = result.regions["exclusion"].bounds
    assert (x0, y0, x1, y1) == pytest.approx((315.19, 320.15, 543.02, 625.42), abs=0.01)
    assert x0 >= 0 and x1 <= 1472 and y0 >= 0 and y1 <= 690
    assert result.repairs == []

    as_tumour = read_annotations(
        path, slide_size=(1472, 690), group_map={"None": "tumor"}
    )
    assert as_tumour.tumor_area_px == pytest.approx(expected.area)


def test_dplabtools_every_type_has_an_outcome() -> None:
    result = read_annotations(need(ANN / "asap" / "dplabtools_asap1.xml"))
    kinds = {a.name: (a.source_type, a.kind) for a in result.annotations}
    assert kinds == {
        "Annotation 1": ("Rectangle", "area"),
        "Annotation 2": ("Polygon", "area"),
        "Annotation 3": ("Spline", "area"),
    }
    assert [(a.name, a.kind) for a in result.points] == [("Annotation 0", "points")]
    assert [(a.name, a.kind) for a in result.lines] == [("Annotation 4", "line")]
    assert result.annotations[0].geometry.area == pytest.approx(
        (8336.99023 - 5954.99219) * (26360.7676 - 24058.1719)
    )
    assert any("Annotation 3" in w and "approximated" in w for w in result.warnings)


def test_camelyon16_test_040_matches_independent_shapely() -> None:
    path = need(ANN / "camelyon16" / "test_040.xml")
    root = ET.parse(path).getroot()
    groups: dict[str, list[Polygon]] = {"_0": [], "_2": []}
    for element in root.iter("Annotation"):
        ring = [
            (float(c.get("X", "")), float(c.get("Y", "")))
            for c in element.iter("Coordinate")
        ]
        groups[element.get("PartOfGroup", "")].append(shapely.make_valid(Polygon(ring)))
    expected = shapely.union_all(groups["_0"]).difference(
        shapely.union_all(groups["_2"])
    )

    result = read_annotations(path)
    assert result.polygons_per_group == {"_0": 34, "_2": 44}
    assert result.tumor_area_px == pytest.approx(expected.area, rel=1e-9)
    assert result.tumor.symmetric_difference(expected).area < 1e-6 * expected.area
    assert result.tumor.bounds == pytest.approx((23424.7, 64299.7, 75055.9, 106328.0))
    assert len(result.repairs) == 39


def test_camelyon17_tumor_group() -> None:
    result = read_annotations(need(ANN / "camelyon17" / "patient_004_node_4.xml"))
    assert result.polygons_per_group == {"Tumor": 3}
    assert result.tumor.bounds == pytest.approx(
        (10626.2002, 75345.3984, 13482.7998, 89160.6016)
    )


def test_ncrf_json_positive_minus_negative() -> None:
    path = need(ANN / "camelyon16-ncrf-json" / "Tumor_107.json")
    data = json.loads(path.read_text())

    def union(key: str) -> object:
        return shapely.union_all(
            [shapely.make_valid(Polygon(e["vertices"])) for e in data[key]]
        )

    expected = union("positive").difference(union("negative"))
    result = read_annotations(path)
    assert result.format == "ncrf"
    assert result.tumor_area_px == pytest.approx(expected.area)


# -- QuPath ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "area"),
    [
        ("list_of_features.geojson", 40_000),
        ("feature_collection.geojson", 50_000),
        ("single_feature.geojson", 10_000),
    ],
)
def test_qupath_containers(name: str, area: int) -> None:
    result = read_annotations(
        need(QUPATH_CASE / name), slide_size=_slide_dims(QUPATH_CASE)
    )
    assert result.format == "qupath"
    assert result.tumor_area_px == area


def test_qupath_classification_variants() -> None:
    collection = read_annotations(need(QUPATH_CASE / "feature_collection.geojson"))
    assert collection.polygons_per_group == {
        "Tumor": 1,
        "Tumor: Positive": 1,
        "Unclassified": 1,
        "Stroma": 1,
    }
    labels = {a.group: a.label for a in collection.annotations}
    assert labels["Tumor: Positive"] == "tumor"
    assert labels["Unclassified"] == "Unclassified"
    [warning] = collection.warnings
    assert "feature_collection.geojson" in warning and "classification" in warning

    old = read_annotations(need(QUPATH_CASE / "list_of_features.geojson"))
    colors = {a.group: a.color for a in old.annotations}
    assert colors == {"Tumor": (200, 0, 0), "Stroma": (150, 200, 150)}
    assert old.warnings == []


def test_tcga_qupath_multipolygon() -> None:
    path = need(ANN / "qupath" / "TCGA-EJ-5519-01Z-00-DX1.json")
    features = json.loads(path.read_text())
    tumour = next(
        f for f in features if f["properties"]["classification"]["name"] == "Tumor"
    )
    other = next(
        f for f in features if f["properties"]["classification"]["name"] == "Other"
    )

    result = read_annotations(path)
    assert result.polygons_per_group == {"Tumor": 1, "Other": 1, "Negative": 1}
    assert result.tumor_area_px == pytest.approx(shape(tumour["geometry"]).area)
    assert len(result.regions["Other"].geoms) == 3
    assert result.regions["Other"].area == pytest.approx(
        shapely.make_valid(shape(other["geometry"])).area
    )


def test_geojson_export_round_trip(tmp_path: Path) -> None:
    source = read_annotations(need(DEGENERATE / "degenerate_and_types.xml"))
    exported = source.to_geojson()
    assert exported["type"] == "FeatureCollection"
    classes = {f["properties"]["classification"]["name"] for f in exported["features"]}
    assert classes == {"_0"}
    assert all(
        len(f["properties"]["classification"]["color"]) == 3
        for f in exported["features"]
    )
    out = tmp_path / "export.geojson"
    out.write_text(json.dumps(exported))
    again = read_annotations(out, group_map={"_0": "tumor"})
    assert again.tumor_area_px == 100_000
    assert len(again.non_area) == 3


# -- refusals --------------------------------------------------------------------


def test_imagescope_xml_refused_clearly() -> None:
    path = need(ANN / "imagescope" / "TCGA-EJ-5519-01Z-00-DX1.xml")
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    assert "TCGA-EJ-5519-01Z-00-DX1.xml" in str(info.value)
    assert "Aperio ImageScope XML" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<ASAP_Annotations><Annotations>", "broken XML"),
        ("<svg></svg>", "not an annotation file"),
        ('{"type": "Feature", "geometry": ', "broken JSON"),
        ('{"hello": 1}', "not an annotation file"),
        ("x,y\n1,2\n", "not an annotation file"),
    ],
)
def test_broken_files_raise_annotation_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotations(path)
    assert "bad.xml" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="absent.xml"):
        read_annotations(tmp_path / "absent.xml")


def test_find_annotation(tmp_path: Path) -> None:
    (tmp_path / "tumor_001.geojson").write_text("[]")
    (tmp_path / "tumor_001.xml").write_text("<ASAP_Annotations/>")
    (tmp_path / "Tumor_002.json").write_text("[]")
    assert find_annotation("tumor_001", tmp_path) == tmp_path / "tumor_001.xml"
    assert find_annotation("tumor_002", tmp_path) == tmp_path / "Tumor_002.json"
    assert find_annotation("normal_001", tmp_path) is None
    with pytest.raises(AnnotationError, match="does not exist"):
        find_annotation("x", tmp_path / "nowhere")


def test_default_group_map_camelyon_conventions() -> None:
    for group in ("_0", "_1", "Tumor", "metastases"):
        assert DEFAULT_GROUP_MAP[group] == "tumor"
    for group in ("_2", "Exclusion", "None"):
        assert DEFAULT_GROUP_MAP[group] == "exclusion"


@pytest.mark.parametrize(
    "data",
    [{"positive": "x"}, {"positive": 5}, {"negative": {"a": 1}}],
)
def test_ncrf_of_the_wrong_shape_is_an_annotation_error(
    tmp_path: Path, data: object
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match="must be a list of polygons"):
        read_annotations(path)


def test_odd_json_entries_are_skipped_with_warnings(tmp_path: Path) -> None:
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    ncrf = tmp_path / "n.json"
    ncrf.write_text(json.dumps({"positive": [None, {"vertices": square}]}))
    result = read_annotations(ncrf)
    assert result.tumor_area_px == pytest.approx(100.0)
    assert any("positive 0 is not an object" in w for w in result.warnings)
    geo = tmp_path / "g.geojson"
    features = [
        {"type": "Feature", "geometry": [1, 2], "properties": {"name": "odd"}},
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [square]},
            "properties": {"classification": {"names": "Tumor"}},
        },
    ]
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = read_annotations(geo)
    # "names" given as one string is that class, here tumour.
    assert result.tumor_area_px == pytest.approx(100.0)
    assert any("geometry is not an object" in w for w in result.warnings)
