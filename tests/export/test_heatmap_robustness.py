"""``wsi-dram heatmap`` on inputs that must not look like results.

* A slide on which no field has enough tissue fails (exit 1) instead of being
  reported ``done`` with score 0 from 0 fields.
* Sources are expanded like ``wsi-dram preprocess`` (globs, folders, DICOM
  series once) with ``.ome.zarr`` stores kept; a missing path, an empty glob or
  an unwritable ``--out`` are one error line and exit code 2.

The slide is synthetic: 512 x 512 px at 4 µm/px, white with one pink 160 x 160
px square. A field of 8192 px covers it with 160² / 8192² = 0.04 % tissue, far
below the default ``min_tissue`` 0.05; a field of 512 px at the square has
160² / 512² = 9.8 % and is scored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.cache.helpers import write_tiff
from tests.conftest import CASES, need
from wsi_dram.cli import app, main
from wsi_dram.cli.heatmap import expand_sources
from wsi_dram.errors import DataError, WsiDramError
from wsi_dram.export.run import check_writable, heatmap_slides
from wsi_dram.model.dram import DRAM
from wsi_dram.training.checkpoints import save_checkpoint
from wsi_dram.training.config import TrainConfig

SIDE, SQUARE, MPP = 512, 160, 4.0


def slide_checkpoint(path: Path, field_size: int) -> Path:
    """A freshly initialised small slide DRAM with fields of ``field_size`` px."""
    config = TrainConfig()
    config.task.kind = "slide_regions"
    config.task.options = {"labels": "labels.csv", "field_size": field_size}
    m = config.model
    m.glimpses, m.glimpse_size, m.scales, m.context_size = 2, 16, 3, 16
    m.hidden, m.hidden_what, m.hidden_where = 16, 16, 8
    m.conv_channels, m.context_channels = [4], [4]
    torch.manual_seed(0)
    model = DRAM(m, 3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    save_checkpoint(path, model, optimizer, scheduler, 0, config, 2, 3, {}, 0.0)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny slide and checkpoints with huge (8192) and fitting (512) fields."""
    root = tmp_path_factory.mktemp("tiny")
    rgb = np.full((SIDE, SIDE, 3), 245, np.uint8)
    lo = (SIDE - SQUARE) // 2
    rgb[lo : lo + SQUARE, lo : lo + SQUARE] = (200, 80, 150)
    return {
        "root": root,
        "slide": write_tiff(root / "tiny.tif", rgb, mpp=MPP),
        "huge": slide_checkpoint(root / "huge.pt", 8192),
        "fits": slide_checkpoint(root / "fits.pt", 512),
    }


def run_main(monkeypatch: Any, capfd: Any, *args: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty, non-log stderr lines of ``wsi-dram ARGS``."""
    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", ["wsi-dram", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capfd.readouterr().err.splitlines()
    lines = [x for x in err if x.strip() and not x.startswith(("INFO", "WARNING"))]
    code = info.value.code
    return (code if isinstance(code, int) else 1), lines


def test_no_field_with_enough_tissue_is_a_failed_slide(
    tiny: dict[str, Path],
) -> None:
    out = tiny["root"] / "out_huge"
    args = ["heatmap", str(tiny["slide"]), "--checkpoint", str(tiny["huge"])]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "failed tiny: " in text
    assert "no field with enough tissue to score (min_tissue 0.05" in text
    assert "too small for fields of 8192 px or has too little tissue" in text
    assert "0 done / 1 failed" in text
    assert not list(out.glob("tiny.*"))  # no heatmap that reads as a negative

    rows = heatmap_slides([tiny["slide"]], tiny["huge"], out, formats=["lesions"])
    assert [(r.status, r.score, r.fields) for r in rows] == [("failed", None, 0)]
    assert rows[0].error.endswith(
        "no field with enough tissue to score (min_tissue 0.05 of a field); the "
        "slide is too small for fields of 8192 px or has too little tissue"
    )


def test_same_slide_with_fitting_fields_is_scored(tiny: dict[str, Path]) -> None:
    rows = heatmap_slides(
        [tiny["slide"]], tiny["fits"], tiny["root"] / "out_fits", formats=["lesions"]
    )
    assert rows[0].status == "done", rows[0].error
    assert rows[0].fields >= 1 and rows[0].score is not None


def test_glob_without_match_is_one_error_line(
    tiny: dict[str, Path], monkeypatch: Any, capfd: Any
) -> None:
    pattern = str(tiny["root"] / "nothing-*.svs")
    code, err = run_main(
        monkeypatch, capfd, "heatmap", pattern, "--checkpoint", str(tiny["fits"]),
        "--out", str(tiny["root"] / "o1"),
    )  # fmt: skip
    assert (code, err) == (2, [f"error: {pattern}: no slide matches this pattern"])


def test_missing_path_is_one_error_line(
    tiny: dict[str, Path], monkeypatch: Any, capfd: Any
) -> None:
    missing = str(tiny["root"] / "missing.svs")
    code, err = run_main(
        monkeypatch, capfd, "heatmap", str(tiny["slide"]), missing,
        "--checkpoint", str(tiny["fits"]), "--out", str(tiny["root"] / "o2"),
    )  # fmt: skip
    assert (code, err) == (2, [f"error: {missing}: no such slide file"])
    assert not (tiny["root"] / "o2").exists()  # nothing scored before the error


def test_a_garbage_checkpoint_leaves_no_output_folder(
    tiny: dict[str, Path], monkeypatch: Any, capfd: Any
) -> None:
    garbage = tiny["root"] / "garbage.pt"
    garbage.write_bytes(b"this is not a torch checkpoint")
    out = tiny["root"] / "HG"
    cache = tiny["root"] / "HG_cache"
    code, err = run_main(
        monkeypatch, capfd, "heatmap", str(tiny["slide"]),
        "--checkpoint", str(garbage), "--out", str(out), "--cache", str(cache),
    )  # fmt: skip
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {garbage}: ")
    assert not out.exists() and not cache.exists()


def test_out_under_a_regular_file_is_one_error_line(
    tiny: dict[str, Path], monkeypatch: Any, capfd: Any
) -> None:
    blocker = tiny["root"] / "a_file"
    blocker.write_text("x")
    out = blocker / "out"
    code, err = run_main(
        monkeypatch, capfd, "heatmap", str(tiny["slide"]),
        "--checkpoint", str(tiny["fits"]), "--out", str(out),
    )  # fmt: skip
    assert (code, err) == (
        2,
        [f"error: {out}: output folder is not writable (Not a directory)"],
    )
    with pytest.raises(WsiDramError, match="cache folder is not writable"):
        check_writable(out / "cache", "cache folder")


def test_expand_sources_like_preprocess_with_stores(tmp_path: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("b.svs", "a.tif", "notes.txt", ".hidden.svs"):
        (folder / name).write_bytes(b"")
    (folder / "c.ome.zarr").mkdir()  # a store inside a folder is scored too
    series = tmp_path / "dicom"
    series.mkdir()
    for name in ("1.dcm", "2.dcm"):
        (series / name).write_bytes(b"")
    store = tmp_path / "s.ome.zarr"
    store.mkdir()
    found = expand_sources(
        [str(store), str(folder), str(folder / "a.tif"), str(series / "*.dcm")]
    )
    assert found == [
        store,
        folder / "a.tif",
        folder / "b.svs",
        folder / "c.ome.zarr",
        series / "1.dcm",
    ]
    assert expand_sources([str(tmp_path / "*.ome.zarr")]) == [store]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no slide file"):
        expand_sources([str(empty)])
    with pytest.raises(DataError, match="no such slide file"):
        expand_sources([str(tmp_path / "gone.ome.zarr")])


def test_two_sources_with_one_slide_id_the_second_fails_naming_both(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """b/tiny.tif (another picture) must not overwrite a/tiny.tif's outputs."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = tmp_path / "a" / "tiny.tif"
    a.write_bytes(tiny["slide"].read_bytes())
    rgb = np.full((SIDE, SIDE, 3), 245, np.uint8)
    rgb[:SQUARE, :SQUARE] = (120, 30, 90)  # another place, another colour
    b = write_tiff(tmp_path / "b" / "tiny.tif", rgb, mpp=MPP)
    alone = heatmap_slides([a], tiny["fits"], tmp_path / "alone", formats=["lesions"])
    assert alone[0].status == "done", alone[0].error
    out = tmp_path / "out"
    rows = heatmap_slides([a, b], tiny["fits"], out, formats=["lesions"])
    assert [r.status for r in rows] == ["done", "failed"], [r.error for r in rows]
    assert str(a) in rows[1].error and str(b) in rows[1].error
    assert "duplicate slide id 'tiny'" in rows[1].error
    assert (out / "tiny.lesions.csv").read_bytes() == (
        tmp_path / "alone" / "tiny.lesions.csv"
    ).read_bytes()


def test_slide_without_pixel_size_hint_names_what_heatmap_accepts(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """1024 x 768 px, no resolution: preprocess --mpp first, with --min-side 500.

    The model reads levels 0..2 (3 scales); long sides 1024, 512, 256 give a
    third level only when 512 >= min_side, and halving 1000 once gives 500."""
    slide = need(CASES / "mpp-missing" / "no_resolution.tif")
    rows = heatmap_slides([slide], tiny["fits"], tmp_path / "out", formats=["lesions"])
    assert rows[0].status == "failed"
    assert rows[0].error == (
        f"{slide}: pixel size unknown (the file has no openslide.mpp-x property); "
        f"cache it first with `wsi-dram preprocess {slide} --mpp X --min-side 500 "
        "--cache DIR` (X in micrometres per pixel), then give "
        "DIR/no_resolution.ome.zarr to heatmap"
    )
    assert "config key" not in rows[0].error
