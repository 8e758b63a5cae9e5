"""Every annotation the pipeline read shows on the QC picture, not only tumour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely.geometry
from PIL import Image

from tests.conftest import DATA, need
from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
from wsi_dram.cache.store import open_cache
from wsi_dram.slides.annotations import read_annotations


def test_exclusion_only_annotation_is_stored_and_drawn(tmp_path: Path) -> None:
    slide = need(DATA / "slides" / "generic-tiff" / "wsp_example.tif")
    xml = need(DATA / "annotations" / "asap" / "wsp_example.xml")
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "wsp_example.xml").write_bytes(xml.read_bytes())

    rows = preprocess([slide], tmp_path / "cache", folder, PreprocessOptions())
    assert [r.status for r in rows] == ["done"]

    # Group "None" counts as exclusion: no tumour, but the region is kept.
    expected = read_annotations(xml, (1472, 690)).regions["exclusion"]
    cached = open_cache(tmp_path / "cache" / "wsp_example.ome.zarr")
    stored = shapely.geometry.shape(cached.attrs["annotation"]["regions"]["exclusion"])
    assert stored.area > 0
    assert stored.symmetric_difference(expected).area < 1e-6 * expected.area

    # The QC picture has the orange outline (255, 140, 0) of that region.
    qc = np.asarray(Image.open(tmp_path / "cache" / "qc" / "wsp_example.png"))
    rgb = qc[..., :3].astype(int)
    orange = (
        (np.abs(rgb[..., 0] - 255) < 30)
        & (np.abs(rgb[..., 1] - 140) < 40)
        & (rgb[..., 2] < 60)
    )
    assert orange.sum() > 50
