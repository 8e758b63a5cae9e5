"""A short real training run of the region task, its evaluation, and DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.data.slide_cohort import SlideCohort, region_config, slide_cohort  # noqa: F401
from wsi_dram.cli import app
from wsi_dram.config import config_to_dict, dump_toml
from wsi_dram.errors import DataError
from wsi_dram.training import train
from wsi_dram.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(slide_cohort: SlideCohort, tmp_path_factory: Any) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("slide_run")
    config = region_config(slide_cohort)
    train(config, out)
    return out


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().split("\n")
        if line
    ]


def test_training_logs_slide_auc_and_selects_by_it(trained: Path) -> None:
    lines = _metrics(trained)
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:
        assert {"val_auc", "val_pixels_read_fraction", "val_selection"} <= set(line)
        assert line["val_n_slides"] == 2
        assert 0.0 < line["val_pixels_read_fraction"] < 1.0
        assert line["images"] == 16
    # best.pt is the first epoch with the highest selection value (the AUC).
    values = [line["val_selection"] for line in lines]
    best_epoch = values.index(max(values)) + 1
    assert load_checkpoint(trained / "checkpoints" / "best.pt")["epoch"] == best_epoch
    assert lines[-1]["best_epoch"] == best_epoch


def _evaluate(run: Path, split: str, out: Path) -> Any:
    """``wsi-dram evaluate`` of the run's best.pt on ``split`` into ``out``."""
    checkpoint = str(run / "checkpoints" / "best.pt")
    return CliRunner().invoke(
        app,
        ["evaluate", "--checkpoint", checkpoint, "--split", split, "--out", str(out)],
    )


def test_evaluate_reproduces_the_validation_figures(trained: Path) -> None:
    lines = _metrics(trained)
    best = max(lines, key=lambda line: (line["val_selection"], -line["epoch"]))
    report_path = trained / "eval" / "report.json"
    result = _evaluate(trained, "val", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["n_slides"] == 2
    assert report["auc"] == pytest.approx(best["val_auc"])
    assert report["pixels_read_fraction"] == pytest.approx(
        best["val_pixels_read_fraction"]
    )
    assert (trained / "eval" / "predictions.csv").exists()
    assert len(list((trained / "eval" / "lesions").glob("*.csv"))) == 2


def test_torchrun_two_cpu_processes(
    slide_cohort: SlideCohort,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = region_config(slide_cohort)
    config.train.epochs = 1
    path = tmp_path / "ddp.toml"
    path.write_text(dump_toml(config_to_dict(config)) + "\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "wsi_dram.cli",
            "train",
            "--config",
            str(path),
            "--out",
            str(out),
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = _metrics(out)
    # Each rank took half of every batch; the counts are summed over ranks.
    assert line["images"] == 16
    assert "val_auc" in line
    assert (out / "checkpoints" / "best.pt").exists()


def test_an_empty_val_split_fails_before_the_first_epoch(
    slide_cohort: SlideCohort,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = region_config(slide_cohort, split_fractions=[1.0, 0.0, 0.0])
    with pytest.raises(DataError, match="val split is empty"):
        train(config, tmp_path / "run")
    # the run folder this call created is gone again ...
    assert not (tmp_path / "run").exists()
    # ... but a folder the user made stays (with the failed start's log)
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="val split is empty"):
        train(config, tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()
    assert not (tmp_path / "mine" / "metrics.jsonl").exists()


def test_an_empty_test_split_skips_the_final_test(
    slide_cohort: SlideCohort,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 4 slides, shares [0.5, 0.5, 0]: 2 train, 2 val, 0 test slides.
    config = region_config(slide_cohort)
    config.train.epochs, config.train.final_test = 1, True
    with caplog.at_level("WARNING", logger="wsi_dram"):
        summary = train(config, tmp_path / "run")
    assert "test" not in summary
    assert not (tmp_path / "run" / "test_report.json").exists()
    assert any(
        "final test skipped: the test split is empty" in r.getMessage()
        for r in caplog.records
    )


def test_evaluate_an_empty_split_is_one_error_naming_it(trained: Path) -> None:
    out = trained / "eval_empty" / "report.json"
    result = _evaluate(trained, "test", out)
    assert isinstance(result.exception, DataError)
    assert "the test split is empty" in str(result.exception)
    assert not out.exists()
