"""evaluate_slides: report.json, predictions.csv, lesion CSVs and plots.

A stub model with known outputs drives the plumbing: P(tumour) is 0.9 in fields
that overlap the slide's tumour outline, 0.3 elsewhere on tumour slides and 0.2
on normal slides, so every figure of the report can be worked out by hand.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import box
from torch import nn

from tests.data.slide_cohort import SlideCohort, region_config, slide_cohort  # noqa: F401
from wsi_dram.data.tasks import build_task
from wsi_dram.evaluation.lesions import read_detections_csv
from wsi_dram.evaluation.slides import evaluate_slides
from wsi_dram.model.dram import DramOutput, ModelConfig


class TumourOracle(nn.Module):
    """0.9 where the field overlaps tumour, 0.3 / 0.2 elsewhere (see module)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(glimpses=1, glimpse_size=16, scales=2, context_size=8)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, sensor: Any, sample: bool = False, **_: Any) -> DramOutput:
        b = sensor.batch_size
        loc = torch.zeros(b, 2)
        sensor.read(loc)
        p = []
        for (x0, y0, side), slide in zip(sensor.fields, sensor.slides, strict=True):
            tumour = slide.tumor_geometry
            if tumour is None or tumour.is_empty:
                p.append(0.2)
            else:
                hit = shapely.intersects(tumour, box(x0, y0, x0 + side, y0 + side))
                p.append(0.9 if hit else 0.3)
        q = torch.tensor(p)
        logits = torch.stack([torch.log(1 - q), torch.log(q)], dim=1)
        empty = torch.zeros(b, 0)
        return DramOutput(logits, empty, empty, loc[:, None, :])


@pytest.fixture(scope="module")
def evaluated(
    slide_cohort: SlideCohort,  # noqa: F811
    tmp_path_factory: Any,
) -> tuple[dict[str, Any], Path, Any]:
    config = region_config(slide_cohort, score_stride=256, lesion_threshold=0.5)
    task = build_task(config.task, config.sensor_spec())
    out = tmp_path_factory.mktemp("eval") / "report.json"
    report = evaluate_slides(TumourOracle(), task, "val", out, n_bootstrap=200)
    return report, out, task


def test_report_keys_and_values(evaluated: tuple[dict[str, Any], Path, Any]) -> None:
    report, out, task = evaluated
    written = json.loads(out.read_text())
    for key in (
        "auc", "auc_ci", "accuracy", "sensitivity", "specificity", "threshold",
        "froc", "froc_sensitivities", "pixels_read_fraction", "n_slides",
    ):  # fmt: skip
        assert key in written, key
    # One tumour slide at 0.9, one normal at 0.2: perfectly separated.
    assert written["n_slides"] == 2
    assert written["auc"] == 1.0
    assert written["auc_ci"] == [1.0, 1.0]
    assert written["threshold"] == 0.5  # val split: the default threshold
    assert written["accuracy"] == written["sensitivity"] == written["specificity"] == 1
    assert set(written["froc_sensitivities"]) == {
        "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"
    }  # fmt: skip
    # The tiny slides' tumours are isolated tumour cells (major axis + 75 µm of
    # growth under 275 µm), so the FROC is undefined: None.
    for s in task.split_slides("val"):
        geometry = s.cache.tumor_geometry
        if s.label == 1:
            x0, y0, x1, y1 = geometry.bounds
            assert np.hypot(x1 - x0, y1 - y0) * s.cache.mpp + 75 < 275
    assert written["froc"] is None
    assert report["auc"] == written["auc"]


def test_predictions_csv(evaluated: tuple[dict[str, Any], Path, Any]) -> None:
    _, out, task = evaluated
    with open(out.parent / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = {
        s.slide_id: (s.label, 0.9 if s.label == 1 else 0.2)
        for s in task.split_slides("val")
    }
    assert {r["slide_id"] for r in rows} == set(expected)
    for r in rows:
        label, score = expected[r["slide_id"]]
        assert int(r["label"]) == label
        assert float(r["score"]) == pytest.approx(score, abs=1e-6)


def test_lesion_csvs_and_plots(evaluated: tuple[dict[str, Any], Path, Any]) -> None:
    _, out, task = evaluated
    for s in task.split_slides("val"):
        detections = read_detections_csv(out.parent / "lesions" / f"{s.slide_id}.csv")
        if s.label == 0:
            assert detections == []  # 0.2 everywhere: under the 0.5 threshold
            continue
        assert detections
        tumour = s.cache.tumor_geometry
        for confidence, x, y in detections:
            assert confidence == pytest.approx(0.9, abs=1e-6)
            # The detection is the centre of a 256 px cell whose 512 px field
            # overlaps the tumour.
            field = box(x - 256, y - 256, x + 256, y + 256)
            assert shapely.intersects(tumour, field)
    for name in ("roc.png", "froc.png"):
        assert (out.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pixels_read_fraction_by_hand(
    evaluated: tuple[dict[str, Any], Path, Any],
) -> None:
    report, _, task = evaluated
    read = tissue = 0
    for s in task.split_slides("val"):
        mask, d = s.cache.tissue_mask()
        full = np.kron(mask.astype(np.uint8), np.ones((int(d), int(d)), np.uint8))
        full = full[: s.cache.height, : s.cache.width]
        tissue += int(full.sum())
        # Fields of 512 px every 256 px; one 16 px glimpse at each scored
        # field's centre, on the 2 px grid: the windows are 256 px apart.
        for x0, y0 in _scored_origins(s.cache, full):
            cx, cy = x0 + 256, y0 + 256
            read += int(full[max(cy - 8, 0) : cy + 8, max(cx - 8, 0) : cx + 8].sum())
    assert report["tissue_pixels"] == tissue
    assert report["pixels_read"] == read
    assert report["pixels_read_fraction"] == pytest.approx(read / tissue)


def _scored_origins(slide: Any, full: np.ndarray) -> list[tuple[int, int]]:
    ys, xs = np.nonzero(full)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    out = []
    ncol = 1 + -(-max(0, x1 - x0 - 512) // 256)
    nrow = 1 + -(-max(0, y1 - y0 - 512) // 256)
    ox = x0 + (x1 - x0 - ((ncol - 1) * 256 + 512)) // 2
    oy = y0 + (y1 - y0 - ((nrow - 1) * 256 + 512)) // 2
    for r in range(nrow):
        for c in range(ncol):
            fx, fy = ox + c * 256, oy + r * 256
            share = full[max(fy, 0) : fy + 512, max(fx, 0) : fx + 512].sum() / 512**2
            if share >= 0.05:
                out.append((int(fx), int(fy)))
    return out
