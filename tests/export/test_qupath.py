"""QuPath GeoJSON re-read with json + shapely: placement and QuPath's field names."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point, box, shape
from shapely.ops import unary_union

from tests.export.conftest import HOT_BOX, SPOT, SPOT_P, SWAPPED
from wsi_dram.export.heatmap import Heatmap
from wsi_dram.export.qupath import write_qupath_geojson


@pytest.fixture
def features(wide_heatmap: Heatmap, tmp_path: Path) -> list[dict]:
    path = write_qupath_geojson(wide_heatmap, tmp_path / "wide.geojson", threshold=0.5)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    assert not list(tmp_path.glob(".*tmp"))
    return data["features"]


def test_one_detection_per_scored_field(
    features: list[dict], wide_heatmap: Heatmap
) -> None:
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    assert (
        len(detections)
        == int(np.isfinite(wide_heatmap.probabilities).sum())
        == 21 * 76 - 1
    )
    for feature in detections[:50]:
        # QuPath >= 0.4 layout: Feature with a UUID id; objectType and a
        # measurements *object* inside properties.
        assert set(feature) == {"type", "id", "geometry", "properties"}
        assert feature["type"] == "Feature"
        assert str(uuid.UUID(feature["id"])) == feature["id"]
        assert set(feature["properties"]) == {"objectType", "measurements"}
        assert list(feature["properties"]["measurements"]) == ["Tumor probability"]
        geom = shape(feature["geometry"])
        assert feature["geometry"]["type"] == "Polygon"
        assert geom.area == pytest.approx(256 * 256) and geom.equals(geom.envelope)
    assert len({f["id"] for f in features}) == len(features)


def test_hot_detection_square_contains_spot(features: list[dict]) -> None:
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    at_spot = [f for f in detections if shape(f["geometry"]).contains(Point(SPOT))]
    assert len(at_spot) == 1
    assert at_spot[0]["properties"]["measurements"][
        "Tumor probability"
    ] == pytest.approx(SPOT_P)
    # Cell (8, 18) by hand: x 228 + 18 * 256 = 4836, y 188 + 8 * 256 = 2236.
    assert shape(at_spot[0]["geometry"]).equals(box(4836, 2236, 5092, 2492))
    at_swap = [f for f in detections if shape(f["geometry"]).contains(Point(SWAPPED))]
    assert at_swap[0]["properties"]["measurements"][
        "Tumor probability"
    ] == pytest.approx(0.1)


def test_tumor_annotations(features: list[dict]) -> None:
    annotations = [f for f in features if f["properties"]["objectType"] == "annotation"]
    assert len(annotations) == 1
    props = annotations[0]["properties"]
    assert set(props) == {"objectType", "name", "classification", "measurements"}
    assert props["classification"]["name"] == "Tumor"
    colour = props["classification"]["color"]
    assert len(colour) == 3 and all(
        isinstance(c, int) and 0 <= c <= 255 for c in colour
    )
    assert props["measurements"]["Max tumor probability"] == pytest.approx(SPOT_P)
    assert props["measurements"]["Mean tumor probability"] == pytest.approx(
        (11 * 0.9 + 0.99) / 12
    )
    region = unary_union([shape(f["geometry"]) for f in annotations])
    assert region.contains(Point(SPOT)) and not region.contains(Point(SWAPPED))
    assert region.symmetric_difference(box(*HOT_BOX)).area == pytest.approx(0.0)


def test_annotation_holes_survive(tmp_path: Path) -> None:
    probs = np.zeros((5, 5), dtype=np.float32)
    probs[0:5, 0:5] = 0.9
    probs[2, 2] = 0.1
    heat = Heatmap(probs, (0, 0), 100, 100, 500, 500, 0.25, "hole")
    data = json.loads(write_qupath_geojson(heat, tmp_path / "h.geojson").read_text())
    (annotation,) = [
        f for f in data["features"] if f["properties"]["objectType"] == "annotation"
    ]
    assert len(annotation["geometry"]["coordinates"]) == 2  # exterior + one hole
    region = shape(annotation["geometry"])
    assert region.area == pytest.approx(24 * 100 * 100)
    assert not region.contains(Point(250, 250)) and region.contains(Point(150, 250))


def test_empty_heatmap_gives_valid_empty_collection(tmp_path: Path) -> None:
    heat = Heatmap(
        np.full((2, 3), np.nan, np.float32), (0, 0), 10, 10, 30, 20, 1.0, "e"
    )
    data = json.loads(write_qupath_geojson(heat, tmp_path / "e.geojson").read_text())
    assert data == {"type": "FeatureCollection", "features": []}
