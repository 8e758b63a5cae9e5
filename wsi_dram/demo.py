"""The main job end to end, on the embedded default or on real files.

``make demo`` (:func:`run_synthetic`): generate a synthetic cohort, preprocess it,
train the whole-slide DRAM, evaluate it on held-out slides (learned policy and
random glimpses), export heatmaps, run the MNIST sanity check in a short form,
and print a table of the figures and of where every output is.

``make demo-real`` (:func:`run_real`): preprocess every slide of a folder (the
broken ones are reported, not fatal), draw the real annotations on the QC
thumbnails, export heatmaps for the H&E slides with the demo checkpoint, and train
and evaluate MNIST from the real IDX files.

Every step is the ``wsi-dram`` command a user would type, run in a child process
with its output shown, so what the demo prints is what the README shows. Steps
whose outputs exist are skipped by the commands themselves (preprocessing and
synthesis resume), so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_dram.errors import DataError, WsiDramError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass
class DemoSettings:
    """Size of the synthetic demo; ``scale`` multiplies the number of slides.

    Attributes:
        slides: Slides in the cohort at scale 1.
        side: Side of each square slide in level-0 px.
        mnist_epochs: Epochs of the short MNIST check (the RAM configuration,
            the fastest; the DRAM results are in BENCHMARKS.md).
        mnist_subset: Training images of the short MNIST check (0: all).
    """

    slides: int = 48
    side: int = 8192
    mnist_epochs: int = 3
    mnist_subset: int = 0
    extra_set: list[str] = field(default_factory=list)


class StepFailed(WsiDramError):
    """A demo step exited with an error."""


def wsi_dram(*args: str | Path | int, allow_fail: bool = False) -> int:
    """Run ``wsi-dram ARGS`` in a child process, its output shown live.

    Raises:
        StepFailed: The command exited non-zero and ``allow_fail`` is False.
    """
    argv = [sys.executable, "-m", "wsi_dram.cli", *map(str, args)]
    shown = " ".join(shlex.quote(str(a)) for a in ("wsi-dram", *args))
    log.info("$ %s", shown)
    # Written to a log rather than a terminal, rich tables default to 80
    # columns and wrap every cell: give them room.
    env = dict(os.environ)
    if not sys.stdout.isatty():
        env.setdefault("COLUMNS", "140")
    code = subprocess.call(argv, env=env)
    if code and not allow_fail:
        raise StepFailed(f"step failed (exit {code}): {shown}")
    return code


def train_or_resume(config: Path, run: Path, sets: list[str]) -> None:
    """Train into ``run``; a run that was interrupted continues from last.pt."""
    resume = ["--resume"] if (run / "checkpoints" / "last.pt").exists() else []
    overrides = [a for s in sets for a in ("--set", s)]
    wsi_dram("train", "--config", config, "--out", run, *resume, *overrides)


def mnist_dir(out: Path) -> Path:
    """The shared MNIST files when present, else a folder the trainer downloads to."""
    if all((SHARED_MNIST / name).exists() for name in MNIST_FILES):
        return SHARED_MNIST
    return out / "mnist"


def run_mnist(out: Path, epochs: int, subset: int) -> dict[str, Any]:
    """Short MNIST training and evaluation through the same glimpse code."""
    run = out / "runs" / "mnist"
    sets = [
        f"task.data_dir={json.dumps(str(mnist_dir(out)))}",
        f"train.epochs={epochs}",
        f"task.train_subset={subset}",
        "train.final_test=false",
    ]
    train_or_resume(PIPELINES / "mnist_ram.toml", run, sets)
    report = out / "mnist_report.json"
    wsi_dram(
        "evaluate",
        "--checkpoint",
        run / "checkpoints" / "best.pt",
        "--split",
        "test",
        "--samples",
        "1",
        "--out",
        report,
    )
    return dict(json.loads(report.read_text()), run=str(run), report=str(report))


def run_synthetic(
    out: Path, scale: int = 1, settings: DemoSettings | None = None
) -> dict[str, Any]:
    """The whole pipeline on a generated cohort; returns the figures and paths."""
    s = settings or DemoSettings()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cohort, cache = out / "cohort", out / "cache"
    run, evaluation = out / "runs" / "synthetic", out / "evaluation"

    slides = s.slides * max(1, scale)
    if not (cohort / "labels.csv").exists():
        wsi_dram(
            "synth",
            "--out",
            cohort,
            "--slides",
            slides,
            "--size",
            s.side,
            s.side,
            "--seed",
            0,
        )
    wsi_dram(
        "preprocess",
        *sorted(cohort.glob("*.tif")),
        "--cache",
        cache,
        "--annotations",
        cohort,
    )

    sets = [
        f"task.options.cache_dir={json.dumps(str(cache))}",
        f"task.options.labels={json.dumps(str(cohort / 'labels.csv'))}",
        *s.extra_set,
    ]
    train_or_resume(PIPELINES / "synthetic.toml", run, sets)
    best = run / "checkpoints" / "best.pt"
    wsi_dram(
        "evaluate",
        "--checkpoint",
        best,
        "--split",
        "test",
        "--out",
        evaluation / "learned" / "report.json",
    )
    wsi_dram(
        "evaluate",
        "--checkpoint",
        best,
        "--split",
        "test",
        "--policy",
        "random",
        "--out",
        evaluation / "random" / "report.json",
    )
    learned = json.loads((evaluation / "learned" / "report.json").read_text())
    random = json.loads((evaluation / "random" / "report.json").read_text())

    test_ids = _test_slide_ids(evaluation / "learned" / "predictions.csv")
    stores = [cache / f"{slide_id}.ome.zarr" for slide_id in test_ids]
    heatmaps = out / "heatmaps"
    wsi_dram("heatmap", *stores, "--checkpoint", best, "--out", heatmaps)

    mnist = run_mnist(out, s.mnist_epochs, s.mnist_subset)
    return {
        "learned": learned,
        "random": random,
        "mnist": mnist,
        "minutes": (time.perf_counter() - started) / 60,
        "paths": {
            "cohort": cohort,
            "cache": cache,
            "qc": cache / "qc",
            "run": run,
            "evaluation": evaluation,
            "heatmaps": heatmaps,
            "mnist run": mnist["run"],
        },
    }


def run_real(data: Path, out: Path, checkpoint: Path | None) -> dict[str, Any]:
    """Preprocess every real slide, heatmaps for the H&E ones, MNIST from IDX."""
    if not data.is_dir():
        raise DataError("no such data folder", data)
    slides = sorted(
        p
        for p in (data / "slides").rglob("*")
        if p.is_file()
        and p.suffix.lower()
        in {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".mrxs", ".scn", ".bif", ".vms"}
    )
    if not slides:
        raise DataError("no slide files under slides/", data)
    cache = out / "cache"
    # DICOM series are opened from one file of the series.
    dicom = [p for p in slides if p.suffix.lower() == ".dcm"]
    slides = [p for p in slides if p.suffix.lower() != ".dcm"] + dicom[:1]
    code = wsi_dram(
        "preprocess",
        *slides,
        "--cache",
        cache,
        "--annotations",
        data / "annotations" / "asap",
        # Real test slides are small: keep levels down to 256 px so that the
        # demo model's three scales fit (1472 px would stop at 2 levels).
        "--min-side",
        256,
        allow_fail=True,
    )

    result: dict[str, Any] = {
        "preprocess_exit": code,
        "paths": {"cache": cache, "qc": cache / "qc"},
    }
    done = [
        cache / f"{p.stem}.ome.zarr"
        for p in slides
        if (cache / f"{p.stem}.ome.zarr").exists()
    ]
    he = [
        p for p in done if p.name.split(".")[0] in {"CMU-1-Small-Region", "wsp_example"}
    ]
    if checkpoint is not None and he:
        wsi_dram(
            "heatmap",
            *he,
            "--checkpoint",
            checkpoint,
            "--out",
            out / "heatmaps",
            allow_fail=True,
        )
        result["paths"]["heatmaps"] = out / "heatmaps"
    mnist_files = data / "mnist"
    if all((mnist_files / name).exists() for name in MNIST_FILES):
        result["mnist"] = run_mnist(out, 3, 0)
    return result


def _test_slide_ids(predictions: Path) -> list[str]:
    lines = predictions.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("slide_id") if "slide_id" in header else 0
    return [line.split(",")[column] for line in lines[1:] if line.strip()]
