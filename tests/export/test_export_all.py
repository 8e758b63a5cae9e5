"""export_all writes every format under its name; lesion CSV; real slides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from shapely.geometry import box

from tests.conftest import DATA, need
from tests.export.conftest import SPOT, SPOT_P, THUMB_DS, TISSUE
from wsi_dram.errors import ConfigError
from wsi_dram.evaluation.lesions import read_detections_csv
from wsi_dram.export import ALL_FORMATS, GlimpsePath, Heatmap, export_all
from wsi_dram.export.lesions import write_lesions_csv


def test_lesions_csv_round_trip(tmp_path: Path) -> None:
    path = write_lesions_csv(
        tmp_path / "s.lesions.csv", [(0.9, 10.7, 20), (0.25, 3, 4)]
    )
    assert path.read_text() == "0.900000,10,20\n0.250000,3,4\n"
    assert read_detections_csv(path) == [(0.9, 10.0, 20.0), (0.25, 3.0, 4.0)]


def test_export_all_writes_each_format(
    wide_heatmap: Heatmap, wide_thumbnail: np.ndarray, tmp_path: Path
) -> None:
    glimpses = [GlimpsePath(np.array([SPOT, (9000.0, 3000.0)]), [256.0, 1024.0])]
    written = export_all(
        wide_heatmap, tmp_path / "out", wide_thumbnail, THUMB_DS, TISSUE, glimpses
    )
    names = {kind: path.name for kind, path in written.items()}
    assert names == {
        "png": "wide.heatmap.png",
        "glimpses_png": "wide.glimpses.png",
        "glimpses_gif": "wide.glimpses.gif",
        "geojson": "wide.geojson",
        "xml": "wide.xml",
        "tiff": "wide.heatmap.tif",
        "lesions": "wide.lesions.csv",
    }
    # Only the final files remain: no temporary names left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        names.values()
    )
    # The strongest lesion candidate is the spot (a field centre), x then y.
    best = read_detections_csv(written["lesions"])[0]
    assert best == (pytest.approx(SPOT_P, abs=1e-6), SPOT[0], SPOT[1])


def test_export_all_subset_and_errors(wide_heatmap: Heatmap, tmp_path: Path) -> None:
    written = export_all(wide_heatmap, tmp_path, None, 1.0, None, formats=["xml"])
    assert list(written) == ["xml"]
    with pytest.raises(ConfigError, match="unknown heatmap format"):
        export_all(wide_heatmap, tmp_path, None, 1.0, None, formats=["svg"])
    with pytest.raises(ConfigError, match="need a thumbnail"):
        export_all(wide_heatmap, tmp_path, None, 1.0, None, formats=["png"])
    assert set(ALL_FORMATS) == {"png", "glimpses", "geojson", "xml", "tiff", "lesions"}


@pytest.mark.realdata
@pytest.mark.parametrize(
    "relative",
    ["slides/aperio/CMU-1-Small-Region.svs", "slides/generic-tiff/wsp_example.tif"],
)
def test_real_slides_export(relative: str, tmp_path: Path) -> None:
    path = need(DATA / relative)
    with openslide.OpenSlide(path) as slide:
        width, height = slide.dimensions
        mpp = float(slide.properties.get("openslide.mpp-x", 0.5))
        thumb = slide.get_thumbnail((512, 512)).convert("RGB")
    downsample = width / thumb.width
    stride = 256
    rows, cols = height // stride, width // stride
    rng = np.random.default_rng(0)
    probs = rng.random((rows, cols)).astype(np.float32)
    heat = Heatmap(probs, (0, 0), stride, stride, width, height, mpp, path.stem, 0.5)
    written = export_all(
        heat, tmp_path, np.asarray(thumb), downsample, box(0, 0, width, height)
    )
    with openslide.OpenSlide(written["tiff"]) as tif:
        assert tif.dimensions == (width, height)
        assert float(tif.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-3)
    features = json.loads(written["geojson"].read_text())["features"]
    assert (
        sum(f["properties"]["objectType"] == "detection" for f in features)
        == rows * cols
    )
