"""``wsi-dram heatmap`` on real slides with a real (freshly initialised) checkpoint.

The model is an untrained DRAM of a slide-task config, so its probabilities mean
nothing; these tests check the plumbing on real files: preprocessing a raw slide
into the cache (once), scoring through the checkpoint, every output re-read, a
bad input failing alone, and the exit code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import shapely
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import DATA, need
from wsi_dram.cli import app
from wsi_dram.errors import CheckpointError, ConfigError
from wsi_dram.export.run import (
    heatmap_slide,
    heatmap_slides,
    load_heatmap_model,
    run_heatmap,
)
from wsi_dram.model.dram import DRAM
from wsi_dram.training.checkpoints import save_checkpoint
from wsi_dram.training.config import TrainConfig

CMU = DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs"
WSP = DATA / "slides" / "generic-tiff" / "wsp_example.tif"
FIELD = 512


def make_checkpoint(path: Path, kind: str = "slide_regions", channels: int = 3) -> Path:
    """A freshly initialised small DRAM of a slide config, saved as a checkpoint."""
    config = TrainConfig()
    config.task.kind = kind
    if kind != "mnist":
        config.task.options = {"labels": "labels.csv", "field_size": FIELD}
    m = config.model
    m.glimpses, m.glimpse_size, m.scales, m.context_size = 4, 16, 3, 16
    m.hidden, m.hidden_what, m.hidden_where = 32, 32, 16
    m.conv_channels, m.context_channels = [8], [8]
    torch.manual_seed(0)
    model = DRAM(m, channels, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    save_checkpoint(path, model, optimizer, scheduler, 0, config, 2, channels, {}, 0.0)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "slide.pt")


@pytest.fixture(scope="module")
def cli_run(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Path]:
    """The command on both real slides and a broken cache.

    (A missing file stops the command up front: test_heatmap_robustness.py.)
    """
    need(CMU)
    need(WSP)
    root = tmp_path_factory.mktemp("cli")
    broken = root / "broken.ome.zarr"
    broken.mkdir()
    (broken / ".zattrs").write_text(
        json.dumps({"wsi_dram": {"complete": True, "slide_id": "broken"}})
    )
    out = root / "out"
    args = [
        "heatmap", str(CMU), str(broken), str(WSP),
        "--checkpoint", str(checkpoint), "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    return result, out


def test_bad_inputs_fail_alone(cli_run: tuple[Any, Path]) -> None:
    result, out = cli_run
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "broken: " in text and "cache store is damaged" in text
    assert re.search(r"2 done / 1 failed", text)
    for stem in ("CMU-1-Small-Region", "wsp_example"):
        assert (out / f"{stem}.heatmap.tif").is_file()
    assert not list(out.glob("missing*")) and not list(out.glob("broken*"))


@pytest.mark.parametrize(
    ("stem", "size", "mpp"),
    [
        ("CMU-1-Small-Region", (2220, 2967), 0.499),
        ("wsp_example", (1472, 690), 0.98719728520746564),
    ],
)
def test_real_slide_outputs(
    cli_run: tuple[Any, Path], stem: str, size: tuple[int, int], mpp: float
) -> None:
    _, out = cli_run
    with openslide.OpenSlide(out / f"{stem}.heatmap.tif") as tif:
        assert tif.dimensions == size
        assert float(tif.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-4)
        assert tif.level_dimensions[1] == (size[0] >> 1, size[1] >> 1)
    data = json.loads((out / f"{stem}.geojson").read_text())
    detections = [
        f for f in data["features"] if f["properties"]["objectType"] == "detection"
    ]
    assert detections
    slide_box = shapely.box(0, 0, *size)
    for feature in detections:
        cell = shapely.geometry.shape(feature["geometry"])
        assert cell.within(slide_box)
        assert 0.0 <= feature["properties"]["measurements"]["Tumor probability"] <= 1
    png = Image.open(out / f"{stem}.heatmap.png")
    assert png.size[0] > 400 and png.size[1] > 150
    assert Image.open(out / f"{stem}.glimpses.gif").n_frames == 4  # T glimpses
    store = out / "cache" / f"{stem}.ome.zarr"
    assert (store / "labels" / "heatmap" / "0").is_dir()
    assert (out / f"{stem}.xml").read_text().startswith("<?xml")
    assert (out / f"{stem}.lesions.csv").is_file()


def test_small_slide_cached_with_enough_levels(cli_run: tuple[Any, Path]) -> None:
    # wsp_example is 1472 x 690: the default min_side 1000 gives 2 levels, the
    # model's 3 scales need 3, so it is cached with min_side 500 (736 >= 500).
    _, out = cli_run
    attrs = json.loads((out / "cache" / "wsp_example.ome.zarr" / ".zattrs").read_text())
    assert len(attrs["multiscales"][0]["datasets"]) == 3


def test_cache_reused_and_stride_and_formats(
    cli_run: tuple[Any, Path], checkpoint: Path, tmp_path: Path
) -> None:
    _, out = cli_run
    store = out / "cache" / "CMU-1-Small-Region.ome.zarr"
    before = (store / ".zattrs").stat().st_mtime_ns
    model = load_heatmap_model(checkpoint, stride=256)
    assert model.options.field_size == FIELD and model.options.stride == 256
    outputs = heatmap_slide(
        CMU, model, tmp_path, formats=["geojson", "tiff"], cache_dir=out / "cache"
    )
    assert (store / ".zattrs").stat().st_mtime_ns == before  # not rebuilt
    assert set(outputs) == {"geojson", "tiff", "label"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "CMU-1-Small-Region.geojson",
        "CMU-1-Small-Region.heatmap.tif",
    ]
    cells = [
        shapely.geometry.shape(f["geometry"])
        for f in json.loads(outputs["geojson"].read_text())["features"]
        if f["properties"]["objectType"] == "detection"
    ]
    # Interior cells of a stride-256 grid are 256 px squares.
    sides = {round(c.bounds[2] - c.bounds[0]) for c in cells}
    assert 256 in sides and max(sides) == 256


def test_cache_store_given_directly(
    cli_run: tuple[Any, Path], checkpoint: Path
) -> None:
    _, out = cli_run
    store = out / "cache" / "wsp_example.ome.zarr"
    result = run_heatmap(store, checkpoint, out / "again", formats=["lesions"])
    assert result.cache == store
    assert result.slide_id == "wsp_example"
    assert np.isfinite(result.scores.probabilities).any()
    assert set(result.outputs) == {"lesions", "label"}


def test_library_batch_keeps_going(checkpoint: Path, tmp_path: Path) -> None:
    rows = heatmap_slides(
        [tmp_path / "a.svs", tmp_path / "b.ome.zarr"], checkpoint, tmp_path
    )
    assert [r.status for r in rows] == ["failed", "failed"]
    assert [r.slide_id for r in rows] == ["a", "b"]
    assert all("\n" not in r.error and r.error for r in rows)


def test_non_slide_checkpoint_rejected(tmp_path: Path) -> None:
    mnist = make_checkpoint(tmp_path / "mnist.pt", kind="mnist", channels=1)
    with pytest.raises(CheckpointError, match="heatmaps need a slide model"):
        load_heatmap_model(mnist)


def test_bad_options(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stride"):
        load_heatmap_model(checkpoint, stride=0)
    field = load_heatmap_model(checkpoint).options.field_size
    assert load_heatmap_model(checkpoint, stride=field).options.stride == field
    with pytest.raises(
        ConfigError, match=f"larger than the model's fields \\({field} px"
    ):
        load_heatmap_model(checkpoint, stride=field + 1)
    with pytest.raises(ConfigError, match="unknown format"):
        run_heatmap(tmp_path / "x.svs", checkpoint, tmp_path, formats=["pdf"])
    result = CliRunner().invoke(
        app,
        ["heatmap", "x.svs", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
         "--formats", "png,pdf"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
