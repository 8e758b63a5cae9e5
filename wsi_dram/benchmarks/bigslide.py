"""Benchmark ``bigslide``: peak RSS of ``wsi-dram train`` and ``evaluate`` on a
100,000 x 100,000 px slide against the same commands on a small slide.

Run: ``python -m wsi_dram.benchmarks.bigslide OUT_DIR [SIDE [SMALL]]`` (or
``python -m wsi_dram.benchmarks.run bigslide``). Both slides are synthetic
tumour slides made like the ``heatmap`` stage's (seed 5, 0.5 µm/px; the big
TIFF is that stage's, ``OUT_DIR/../heatmap/cohort``, when it exists) and cached
once with their tumour annotation (:func:`labelled_cache`; not measured).

Each size gets a three-slide region-task cohort whose train and test slides are
that slide and whose val slide is the small one (so the two runs differ only in
the slide trained and evaluated on). The cohort folder holds symbolic links to
the cached store and tile grid under one slide id per split, and a
``labels.csv`` laid out so that ``split_fractions = THIRDS`` puts each id in
its split (the layout is checked through the task's own splitter). Then, each
as its own process with one torch thread:

- ``wsi-dram train --config pipelines/synthetic.toml`` for one epoch of
  ``FIELDS`` balanced fields (memory, not accuracy, is measured), validating on
  the small slide;
- ``wsi-dram evaluate --checkpoint last.pt --split test``: scores every tissue
  field of the test slide on the pipeline's grid (its field size and stride),
  then the val slide for the threshold, and writes lesions and the FROC.

Peak RSS is the command's ``ru_maxrss`` from ``wait4``. Linux carries a peak
across exec from the mm that made the child, so each command is started by a
fresh, small Python process (:func:`wsi_dram.benchmarks.child.run_python`):
a benchmark driver that trained in-process cannot lend its peak to the figure.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import tomllib

from wsi_dram.benchmarks.child import MEASURED, measure, run_python

SIDE = 100_000
SMALL = 8_192
FIELDS = 256
LRU_SMALL = 64  # MiB: the chunk LRU's cap in the second scoring of the big slide
THIRDS = [1 / 3, 1 / 3, 1 / 3]  # split shares: one slide of each split

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "synthetic.toml"

#: A small process that runs one command and reports its own rusage (wait4).
_LAUNCH = """
import json, os, subprocess, sys, time
env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
t0 = time.perf_counter()
with open({log!r}, "w") as log:
    proc = subprocess.Popen({argv!r}, stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd={cwd!r})
    _, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
print(json.dumps({{"code": proc.returncode, "seconds": time.perf_counter() - t0,
    "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}}))
"""


#: Scoring the test slide of a run in-process with the chunk LRU capped.
_SCORE = """
import torch
torch.set_num_threads(1)
from pathlib import Path
from wsi_dram.data.tasks import build_task
from wsi_dram.evaluation.slides import score_split
from wsi_dram.glimpse.chunks import default_cache
from wsi_dram.training.checkpoints import load_model
default_cache().max_bytes = {cap}
model, cfg, _ = load_model(Path({ckpt!r}))
task = build_task(cfg.task, cfg.sensor_spec())
(scored,) = score_split(model, task, "test", "learned", 0, torch.device("cpu"))
extra = {{"lru_mib": default_cache().nbytes / 2**20,
          "fields": len(scored.scores.fields)}}
"""


def run_command(argv: list[str], log: Path) -> dict[str, Any]:
    """Run ``argv`` (one thread) from a fresh small process; its own figures.

    Returns:
        ``seconds`` (wall), ``cpu`` (user + system s) and ``peak_mib`` (peak
        RSS, MiB) of the command alone.

    Raises:
        RuntimeError: The command failed (its output is in ``log``).
    """
    figures = run_python(_LAUNCH.format(log=str(log), argv=argv, cwd=str(ROOT)))
    if figures["code"] != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])[:80]} exited {figures['code']}; see {log}"
        )
    return figures


def split_ids(stem: str) -> dict[str, str]:
    """Slide ids that ``split_fractions = THIRDS`` (seed 0) puts in each split.

    Three ids of one label are split one per split by a seeded shuffle; the
    ids are named after their split while keeping the order the shuffle saw.
    """
    from wsi_dram.data.slide_tasks import SPLITS, stratified_split

    placeholders = [(f"{stem}{i}", 1) for i in range(3)]
    parts = stratified_split(placeholders, THIRDS, 0)
    names = [part[0][0] for part in parts]
    return {split: f"{name}_{split}" for split, name in zip(SPLITS, names, strict=True)}


def make_cohort_dir(work: Path, stem: str, stores: dict[str, Path]) -> Path:
    """Link each split's cached slide under its id and write ``labels.csv``.

    The store is linked as ``<split id>.ome.zarr``; its tile grid keeps the
    store's own name (``<store id>.h5``), the name the region task looks up
    (the id inside the store), so the stores linked must have distinct names.

    Args:
        work: Folder of the cohort (``work/cache``, ``work/labels.csv``).
        stem: Slide id prefix of this cohort.
        stores: split -> the ``<id>.ome.zarr`` store (its ``<id>.h5`` beside it).

    Returns:
        The ``labels.csv`` path (every slide label 1: all are tumour slides).

    Raises:
        ValueError: Two different stores of the same name.
    """
    from wsi_dram.cache.store import STORE_SUFFIX, store_path, tiles_path

    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    ids = split_ids(stem)
    named: dict[str, Path] = {}
    for split, slide_id in ids.items():
        store = stores[split].resolve()
        own = store.name.removesuffix(STORE_SUFFIX)
        if named.setdefault(own, store) != store:
            raise ValueError(f"two stores named {own}: {named[own]}, {store}")
        tiles = tiles_path(store.parent, own)
        links = (store_path(cache, slide_id), tiles_path(cache, own))
        for target, link in zip((store, tiles), links, strict=True):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    labels = work / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["slide_id", "label"])
        writer.writerows([slide_id, 1] for slide_id in sorted(ids.values()))
    return labels


def labelled_cache(cohort: Path, cache: Path, side: int, prefix: str = "synth") -> Path:
    """A synthetic tumour slide cached with its tumour label (made once).

    The slide is made like the ``heatmap`` stage's (seed 5, ``side`` px, 0.5
    µm/px, ids ``<prefix>_000``), reused from ``cohort`` when there. Unlike that
    stage's cache, this one is preprocessed with the slide's annotation, so the
    region task has tumour fields to draw and the evaluation a lesion outline
    for its FROC.

    Returns:
        The ``<slide_id>.ome.zarr`` store (its tile grid beside it).
    """
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
    from wsi_dram.cache.store import is_complete, store_path
    from wsi_dram.synth import make_cohort

    slides = sorted(cohort.glob("*.tif"))
    if not slides:
        make_cohort(cohort, 1, (side, side), seed=5, tumour_fraction=1.0, prefix=prefix)
        slides = sorted(cohort.glob("*.tif"))
    store = store_path(cache, slides[0].stem)
    if not is_complete(store):
        (row,) = preprocess(slides, cache, cohort, PreprocessOptions(qc=False))
        if row.status == "failed" or not row.tumour_mm2:
            raise RuntimeError(f"{slides[0]}: {row.error or 'no tumour label cached'}")
    return store


def _inputs(cohort: Path, cache: Path, side: int, prefix: str) -> Path:
    """:func:`labelled_cache` in a child (its peak RSS is not ours to carry)."""
    made = measure(
        "from pathlib import Path\n"
        "from wsi_dram.benchmarks.bigslide import labelled_cache\n"
        f"store = labelled_cache(Path({str(cohort)!r}), Path({str(cache)!r}), "
        f"{side}, {prefix!r})\n"
        "extra = {'store': str(store)}"
    )
    return Path(made["store"])


def _train_eval(work: Path, labels: Path, fields: int) -> dict[str, Any]:
    """Train then evaluate on the cohort of ``labels``; figures of both."""
    cli = [sys.executable, "-m", "wsi_dram.cli"]
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time
    sets = [
        f'task.options.cache_dir="{labels.parent / "cache"}"',
        f'task.options.labels="{labels}"',
        f"task.options.split_fractions={THIRDS}",
        "task.options.split_seed=0",
        f"task.options.samples_per_epoch={fields}",
        "train.epochs=1",
        "train.threads=1",
        "train.tensorboard=false",
        "train.final_test=false",
    ]
    argv = [*cli, "train", "--config", str(PIPELINE), "--out", str(run_dir)]
    for s in sets:
        argv += ["--set", s]
    train = run_command(argv, work / "train.log")
    report_path = work / "eval" / "report.json"
    argv = [*cli, "evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt")]
    argv += ["--split", "test", "--out", str(report_path)]
    evaluate = run_command(argv, work / "evaluate.log")
    report = json.loads(report_path.read_text())
    with (run_dir / "config.toml").open("rb") as fh:
        options = tomllib.load(fh)["task"]["options"]
    return {"train": train, "evaluate": evaluate, "report": report, "opts": options}


def run(
    out_dir: Path,
    side: int = SIDE,
    small: int = SMALL,
    fields: int = FIELDS,
    big_inputs: Path | None = None,
) -> str:
    """Measure and return the Markdown section for BENCHMARKS.md.

    Args:
        out_dir: Work folder (small slide, cohorts, runs, logs).
        side: Side of the big slide (px).
        small: Side of the baseline slide (px).
        fields: Training fields (one epoch, batches of 32).
        big_inputs: Folder whose ``cohort`` holds the big slide (default
            ``out_dir/../heatmap``, the ``heatmap`` stage's; made when absent).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    big_folder = Path(big_inputs or out_dir.parent / "heatmap").resolve()
    small_store = _inputs(
        out_dir / "small" / "slide", out_dir / "small_cache", small, "small"
    )
    big_store = _inputs(big_folder / "cohort", out_dir / "big_cache", side, "synth")
    results = {}
    for name, store, size in (("small", small_store, small), ("big", big_store, side)):
        work = out_dir / name
        stores = {"train": store, "val": small_store, "test": store}
        labels = make_cohort_dir(work / "cohort", name, stores)
        results[name] = _train_eval(work, labels, fields) | {"side": size}
    from wsi_dram.glimpse.chunks import DEFAULT_CACHE_BYTES

    ckpt = out_dir / "big" / "run" / "checkpoints" / "last.pt"
    lru = {}
    for cap in (DEFAULT_CACHE_BYTES >> 20, LRU_SMALL):
        body = _SCORE.format(cap=cap * 2**20, ckpt=str(ckpt))
        log = out_dir / f"score_lru{cap}.log"
        figures = run_command([sys.executable, "-c", MEASURED.format(body=body)], log)
        extra = json.loads(log.read_text().strip().splitlines()[-1])
        lru[cap] = figures | {"lru_mib": extra["lru_mib"]}
    return _section(results, fields, lru)


def _section(
    results: dict[str, dict[str, Any]], fields: int, lru: dict[int, dict[str, Any]]
) -> str:
    small, big = results["small"], results["big"]
    field = big["opts"]["field_size"]
    stride = big["opts"]["score_stride"] or field
    rows = []
    for r in (small, big):
        rep = r["report"]
        rows.append(
            f"| {r['side']:,} x {r['side']:,} | "
            f"{rep['tissue_pixels'] / 1e6:,.0f} | "
            f"{r['train']['peak_mib']:.0f} | {r['train']['seconds']:.0f} | "
            f"{r['evaluate']['peak_mib']:.0f} | {r['evaluate']['seconds']:.0f} | "
            f"{rep['fields_scored']:,} |"
        )
    area = (big["side"] / small["side"]) ** 2
    ratio_train = big["train"]["peak_mib"] / small["train"]["peak_mib"]
    ratio_eval = big["evaluate"]["peak_mib"] / small["evaluate"]["peak_mib"]
    lines = [
        "## Training and evaluation on a 100k px slide: peak RSS",
        "",
        "`wsi-dram train` (`pipelines/synthetic.toml`, 1 epoch of "
        f"{fields} balanced fields of {field} px, batches of 32, one torch thread) "
        f"and `wsi-dram evaluate --split test` (every tissue field on the {field} px"
        f" / stride {stride} px grid, lesions, FROC), each in its own process, on a "
        "region cohort whose train and test slide is the slide below and whose val "
        f"slide is the {small['side']:,} px one. Synthetic tumour slides, 0.5 µm/px.",
        "",
        "| slide (px) | tissue MP scored | train peak RSS MiB | train wall s "
        "| evaluate peak RSS MiB | evaluate wall s | test fields scored |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"The big slide has {area:,.0f}x the pixels; peak RSS is "
        f"{ratio_train:.2f}x for training and {ratio_eval:.2f}x for evaluation.",
        "",
        "Scoring the same big test slide in one process (no lesions/FROC), with "
        "the decoded-chunk LRU at its default cap and at a small one:",
        "",
        "| chunk LRU cap MiB | LRU held at the end MiB | peak RSS MiB | wall s |",
        "|---|---|---|---|",
    ]
    for cap, r in lru.items():
        lines.append(
            f"| {cap} | {r['lru_mib']:.0f} | {r['peak_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench_out/bigslide")
    size = int(sys.argv[2]) if len(sys.argv) > 2 else SIDE
    base = int(sys.argv[3]) if len(sys.argv) > 3 else SMALL
    print(run(target, size, base))
