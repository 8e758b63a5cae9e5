"""Heatmap placement end to end: a stub model hot on a known box, every output re-read.

The slide is a TIFF written here (pink noisy tissue on white) and run through the
real path: :func:`wsi_dram.export.run.run_heatmap` preprocesses it into a cache,
:func:`~wsi_dram.evaluation.scoring.score_slide` scores it with the model, and
:func:`~wsi_dram.export.export_all` writes the files. Only the model is a stub:
it reads its glimpses through the real sensor and answers 0.95 when the field's
centre lies in ``HOT`` (level-0 box), else 0.05, so placement does not depend on
what a model learned. Slides are 8192 x 2048 (wide) and its transpose (tall).

Hand-worked facts (wide slide; the tall one swaps x and y):
- tissue x in [256, 7936), y in [128, 1920); the grid of 512 px fields centred
  on it starts at (128, 128) (y: 1 + ceil((1792 - 512) / 256) = 6 rows, span
  1792), so field centres lie at 384 + 256 k and the 256 px cells cover
  y in [256, 1792);
- hot box x in [900, 1700), y in [300, 1000): field centres x 1152, 1408,
  1664 and y 384, 640, 896 are in it, 9 hot cells covering
  [1024, 1792) x [256, 1024); its centre (1300, 650); the swapped point
  (650, 1300) is a scored cell outside the box, so it must be cold;
- the hot cells' union therefore covers the box shrunk by 128 px and lies
  inside it grown by 128 px.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import shapely
import tifffile
import torch
import zarr
from PIL import Image
from shapely.geometry import box
from torch import nn

from wsi_dram.evaluation.scoring import ScoringOptions
from wsi_dram.export.heatmap import colour_lut
from wsi_dram.export.overlay import PNG_MARGIN_LEFT, PNG_MARGIN_TOP
from wsi_dram.export.qupath import PROBABILITY_MEASUREMENT
from wsi_dram.export.run import HeatmapModel, HeatmapResult, run_heatmap
from wsi_dram.model.dram import DramOutput, ModelConfig
from wsi_dram.slides.annotations import read_annotations

MPP = 0.5
FIELD, STRIDE = 512, 256
P_HOT, P_COLD = 0.95, 0.05
LUT = colour_lut("viridis")

# (x, y) facts of the wide slide; the tall slide is its transpose.
WIDE = {
    "size": (8192, 2048),
    "tissue": (256, 128, 8192 - 256, 2048 - 128),
    "hot": (900, 300, 1700, 1000),
    "centre": (1300.0, 650.0),
    "swapped": (650.0, 1300.0),
}


def transposed(facts: dict[str, Any]) -> dict[str, Any]:
    """The same slide with x and y exchanged."""
    t = facts["tissue"]
    h = facts["hot"]
    return {
        "size": facts["size"][::-1],
        "tissue": (t[1], t[0], t[3], t[2]),
        "hot": (h[1], h[0], h[3], h[2]),
        "centre": facts["centre"][::-1],
        "swapped": facts["swapped"][::-1],
    }


SLIDES = {"wide": WIDE, "tall": transposed(WIDE)}


def write_slide(path: Path, size: tuple[int, int], tissue: tuple[int, ...]) -> Path:
    """A tiled RGB TIFF (mpp 0.5): noisy pink tissue in ``tissue`` on white."""
    width, height = size
    rng = np.random.default_rng(0)
    rgb = np.full((height, width, 3), 255, np.uint8)
    x0, y0, x1, y1 = tissue
    noise = rng.integers(-25, 26, (y1 - y0, x1 - x0, 1))
    pink = np.array([215, 140, 185]) + noise
    rgb[y0:y1, x0:x1] = np.clip(pink, 0, 255).astype(np.uint8)
    tifffile.imwrite(
        path,
        rgb,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(1e4 / MPP, 1e4 / MPP),
        resolutionunit="CENTIMETER",
    )
    return path


class HotBoxModel(nn.Module):
    """A stand-in for DRAM: tumour probability from the field's position only.

    It reads ``config.glimpses`` glimpses through the sensor (the field centre,
    then fixed offsets), so glimpse paths and pixels read come out of the real
    sensor; the class log-probabilities are ``log(1 - p), log(p)`` with
    ``p = P_HOT`` when the field centre lies in ``hot`` (level-0 box).
    """

    OFFSETS = ((0.0, 0.0), (0.5, -0.5), (-0.5, 0.5))

    def __init__(self, hot: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.config = ModelConfig(
            glimpses=3, glimpse_size=8, scales=2, context_size=8, hidden=8
        )
        self.hot = hot

    def forward(
        self,
        sensor: Any,
        sample: bool = True,
        policy: str = "learned",
        generator: Any = None,
    ) -> DramOutput:
        b = sensor.batch_size
        locations = torch.tensor(self.OFFSETS).expand(b, -1, -1).clone()  # (B, T, 2)
        for t in range(locations.shape[1]):
            sensor.read(locations[:, t])  # (B, K, 3, g, g), content unused
        fields = torch.as_tensor(np.asarray(sensor.fields, np.float64))  # (B, 3)
        cx = fields[:, 0] + fields[:, 2] / 2
        cy = fields[:, 1] + fields[:, 2] / 2
        x0, y0, x1, y1 = self.hot
        inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
        p = torch.where(inside, P_HOT, P_COLD).to(torch.float32)
        logits = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)  # (B, 2)
        zeros = torch.zeros(b, 2)
        return DramOutput(logits, zeros, zeros, locations)


def stub_model(hot: tuple[int, int, int, int]) -> HeatmapModel:
    """The stub wrapped as the heatmap runner's model (512 px fields, stride 256)."""
    options = ScoringOptions(field_size=FIELD, stride=STRIDE, min_tissue=0.05)
    return HeatmapModel(HotBoxModel(hot), options, "hot-box stub")


def lut(p: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in LUT[round(p * 255)])


@pytest.fixture(scope="module", params=sorted(SLIDES))
def run(request: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    name = request.param
    facts = SLIDES[name]
    root = tmp_path_factory.mktemp(f"heat_{name}")
    slide = write_slide(root / f"{name}.tif", facts["size"], facts["tissue"])
    result = run_heatmap(slide, stub_model(facts["hot"]), root / "out")
    return name, (facts, result)


def facts_result(run: tuple[str, Any]) -> tuple[dict[str, Any], HeatmapResult]:
    return run[1]


def in_box(x: float, y: float, b: tuple[int, ...]) -> bool:
    return b[0] <= x < b[2] and b[1] <= y < b[3]


def test_all_outputs_written(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    name = run[0]
    assert set(result.outputs) == {
        "png", "glimpses_png", "glimpses_gif", "geojson", "xml", "tiff",
        "lesions", "label",
    }  # fmt: skip
    out = result.outputs["png"].parent
    assert result.outputs["tiff"] == out / f"{name}.heatmap.tif"
    assert result.outputs["label"] == out / "cache" / f"{name}.ome.zarr"
    assert result.scores.score == pytest.approx(P_HOT)


def test_grid_peak_in_hot_box(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    heat = result.scores.to_heatmap()
    centres = heat.field_centres()  # (rows, cols, 2) (x, y)
    probs = heat.probabilities
    hot = probs == np.float32(P_HOT)
    assert hot.sum() == 9
    # A field is hot exactly when its centre is in the box: (x, y) not swapped.
    for (r, c), p in np.ndenumerate(probs):
        if np.isfinite(p):
            assert (p == np.float32(P_HOT)) == in_box(*centres[r, c], facts["hot"])
    r, c = np.unravel_index(np.nanargmax(probs), probs.shape)
    assert in_box(*centres[r, c], facts["hot"])
    assert (
        probs.shape[1] > probs.shape[0]
        if run[0] == "wide"
        else probs.shape[0] > probs.shape[1]
    )


def test_geojson_polygons_on_the_box(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    data = json.loads(result.outputs["geojson"].read_text())
    assert data["type"] == "FeatureCollection"
    kinds = [f["properties"]["objectType"] for f in data["features"]]
    detections = [
        f for f in data["features"] if f["properties"]["objectType"] == "detection"
    ]
    annotations = [
        f for f in data["features"] if f["properties"]["objectType"] == "annotation"
    ]
    assert set(kinds) == {"detection", "annotation"}
    assert len(detections) == len(result.scores.fields)
    assert len(annotations) == 1
    ann = annotations[0]
    assert ann["properties"]["classification"]["name"] == "Tumor"
    polygon = shapely.geometry.shape(ann["geometry"])
    hot = box(*facts["hot"])
    assert polygon.is_valid
    assert polygon.contains(hot.buffer(-STRIDE / 2, join_style="mitre"))
    assert polygon.within(hot.buffer(STRIDE / 2, join_style="mitre"))
    assert not polygon.contains(shapely.Point(facts["swapped"]))
    # The detection under the centre carries the hot probability.
    point = shapely.Point(facts["centre"])
    under = [
        f for f in detections if shapely.geometry.shape(f["geometry"]).contains(point)
    ]
    assert len(under) == 1
    assert under[0]["properties"]["measurements"][
        PROBABILITY_MEASUREMENT
    ] == pytest.approx(P_HOT)


def test_xml_same_geometry(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    data = json.loads(result.outputs["geojson"].read_text())
    (ann,) = [
        f for f in data["features"] if f["properties"]["objectType"] == "annotation"
    ]
    from_geojson = shapely.geometry.shape(ann["geometry"])
    parsed = read_annotations(result.outputs["xml"], slide_size=facts["size"])
    assert parsed.polygons_per_group.get("_0", 0) >= 1
    assert parsed.tumor.symmetric_difference(from_geojson).area < 1.0
    assert parsed.tumor.contains(shapely.Point(facts["centre"]))


def pixel(slide: openslide.OpenSlide, x: float, y: float, level: int) -> tuple:
    d = 2**level
    x0, y0 = int(x) // d * d, int(y) // d * d
    return tuple(
        slide.read_region((x0, y0), level, (1, 1)).convert("RGB").getpixel((0, 0))
    )


def test_tiff_by_openslide(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    with openslide.OpenSlide(result.outputs["tiff"]) as slide:
        assert slide.dimensions == facts["size"]
        # Long side 8192 halved while > 512: 4096, 2048, 1024, 512 -> 5 levels.
        assert slide.level_count == 5
        w, h = facts["size"]
        assert slide.level_dimensions[4] == (w >> 4, h >> 4)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(
            MPP, rel=1e-4
        )
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(
            MPP, rel=1e-4
        )
        for level in (0, 2, 4):
            assert pixel(slide, *facts["centre"], level) == lut(P_HOT)
            assert pixel(slide, *facts["swapped"], level) == lut(P_COLD)
            assert pixel(slide, 10, 10, level) == (255, 255, 255)  # off tissue


def test_png_colour_under_hot_spot(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    image = np.asarray(Image.open(result.outputs["png"]).convert("RGB"))
    # Thumbnail: the finest cache level with a long side <= 1600 -> level 3
    # (8192 / 8 = 1024 px), drawn 1:1 at (PNG_MARGIN_LEFT, PNG_MARGIN_TOP).
    w, h = facts["size"]
    assert image.shape[0] >= PNG_MARGIN_TOP + h // 8
    assert image.shape[1] >= PNG_MARGIN_LEFT + w // 8
    thumb = np.array([215, 140, 185], np.float64)  # mean tissue colour

    def at(x: float, y: float) -> np.ndarray:
        col = PNG_MARGIN_LEFT + int(x // 8)
        row = PNG_MARGIN_TOP + int(y // 8)
        return image[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3).mean(axis=0)

    for point, p in ((facts["centre"], P_HOT), (facts["swapped"], P_COLD)):
        expected = 0.6 * np.array(lut(p)) + 0.4 * thumb
        np.testing.assert_allclose(at(*point), expected, atol=12)


def test_glimpses_drawn_on_top_fields(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    scores = result.scores
    best = np.argsort(-scores.field_probabilities, kind="stable")[:4]
    for i in best:
        x0, y0, side = scores.fields[i]
        # The first glimpse is the field centre, in level-0 (x, y).
        np.testing.assert_allclose(
            scores.glimpses[i, 0], [x0 + side / 2, y0 + side / 2]
        )
        assert in_box(*scores.glimpses[i, 0], facts["hot"])
    picture = np.asarray(Image.open(result.outputs["glimpses_png"]).convert("RGB"))
    x, y = scores.glimpses[best[0], 0] // 8  # thumbnail at level 3, top-left (0, 0)
    patch = picture[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3].astype(int)
    tissue = np.array([215, 140, 185])
    assert np.abs(patch - tissue).sum(axis=2).max() > 120  # a marker, not tissue
    gif = Image.open(result.outputs["glimpses_gif"])
    assert gif.n_frames == 3  # one frame per glimpse step


def test_lesions_and_label(run: tuple[str, Any]) -> None:
    facts, result = facts_result(run)
    with open(result.outputs["lesions"], newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and r[0] != "confidence"]
    assert rows
    top = max(rows, key=lambda r: float(r[0]))
    assert float(top[0]) == pytest.approx(P_HOT)
    assert in_box(float(top[1]), float(top[2]), facts["hot"])
    root = zarr.open_group(str(result.outputs["label"]), mode="r", zarr_format=2)
    label = np.asarray(root["labels/heatmap/0"][...])  # (y, x)
    ds = root["labels/heatmap"].attrs["multiscales"][0]["datasets"][0][
        "coordinateTransformations"
    ][0]["scale"]
    assert ds[-2] == ds[-1]  # micrometres per label px, y and x
    d = ds[-1] / MPP  # level-0 px per label px
    assert d == 2 ** int(np.log2(STRIDE / 4))  # export_all: 2**floor(log2(256 / 4))
    cx, cy = facts["centre"]
    assert label[int(cy // d), int(cx // d)] == round(P_HOT * 255)
    sx, sy = facts["swapped"]
    assert label[int(sy // d), int(sx // d)] == round(P_COLD * 255)
    assert label.shape == (
        -(-facts["size"][1] // int(d)),
        -(-facts["size"][0] // int(d)),
    )
