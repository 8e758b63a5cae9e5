"""Benchmark ``slides``: whole-slide DRAM on the synthetic cohort.

Measured in one script, on the same machine:

1. Held-out slide AUC, FROC and the fraction of level-0 tissue pixels read, for
   the checkpoint trained with ``pipelines/synthetic.toml`` (learned policy), and
   the same checkpoint with random glimpses (5 seeds) and with every glimpse at
   the field's centre: the ablations of the glimpse policy.
2. The share of a training step spent reading glimpses (``SlideSensor.read``
   and ``context``, timed inside real training steps).
3. Peak RSS (``ru_maxrss``) of a child process that trains a few steps and
   scores a ``big`` x ``big`` synthetic slide (bounded memory: only the chunks
   the glimpses touch are decoded, through the bounded LRU).

Environment knobs (defaults in brackets): ``WSI_DRAM_BENCH_SLIDES`` cohort size
[48], ``WSI_DRAM_BENCH_EPOCHS`` [0: the pipeline's], ``WSI_DRAM_BENCH_BIG`` side
of the big slide in px [100000, 0 skips it]. A cohort, cache or run already in
the output folder (``demo/cohort``, ``demo/cache``, ``run``) is reused.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from wsi_dram.benchmarks.child import run_python

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "synthetic.toml"


def _cohort(work: Path, slides: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the synthetic cohort and its cache under ``work`` (once)."""
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
    from wsi_dram.synth import make_cohort

    cohort, cache = work / "cohort", work / "cache"
    if not (cohort / "labels.csv").exists():
        make_cohort(cohort, slides=slides, size=(size, size), seed=seed)
    if not (cache / "manifest.csv").exists():
        preprocess(
            sorted(cohort.glob("*.tif")), cache, cohort, PreprocessOptions(qc=False)
        )
    return cohort, cache


def _overrides(cohort: Path, cache: Path, epochs: int) -> list[str]:
    sets = [
        f'task.options.cache_dir="{cache}"',
        f'task.options.labels="{cohort / "labels.csv"}"',
        "train.tensorboard=false",
        "train.final_test=false",
    ]
    return sets + ([f"train.epochs={epochs}"] if epochs else [])


def _read_share(config: Any, steps: int = 6) -> tuple[float, float]:
    """(share of step time in glimpse reads, seconds per step) over real steps."""
    from wsi_dram.data.tasks import build_task
    from wsi_dram.model.dram import DRAM, hybrid_loss

    task = build_task(config.task, config.sensor_spec())
    torch.manual_seed(0)
    model = DRAM(config.model, 3, 2)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    reading = total = 0.0
    batches = task.batches("train", config.train.batch_size, 0, 0)
    for _ in range(steps):
        started = time.perf_counter()
        sensor, labels = next(batches)
        timed = {"read": 0.0}
        for name in ("read", "context"):
            original = getattr(sensor, name)

            def wrapper(*args: Any, _f: Any = original, _t: Any = timed) -> Any:
                t0 = time.perf_counter()
                try:
                    return _f(*args)
                finally:
                    _t["read"] += time.perf_counter() - t0

            setattr(sensor, name, wrapper)
        out = model(sensor, sample=True)
        loss, _ = hybrid_loss(out, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += time.perf_counter() - started
        reading += timed["read"]
    return reading / total, total / steps


def _big_slide_rss(work: Path, side: int, pipeline: Path) -> dict[str, Any]:
    """Train 4 steps and score one ``side`` x ``side`` slide in a child process."""
    script = f"""
import json, resource, sys, time
from pathlib import Path
from wsi_dram.benchmarks.slides import _cohort
from wsi_dram.training import read_train_config, train
from wsi_dram.training.checkpoints import load_model
from wsi_dram.cache.store import open_cache
from wsi_dram.data.slide_tasks import read_options
from wsi_dram.evaluation.scoring import options_from_task, score_slide
work = Path({str(work)!r})
t0 = time.perf_counter()
cohort, cache = _cohort(work, 2, {side}, seed=5)
made = time.perf_counter() - t0
sets = [f'task.options.cache_dir="{{cache}}"',
        f'task.options.labels="{{cohort / "labels.csv"}}"',
        'task.options.split_fractions=[0.5, 0.5, 0.0]',
        'task.options.samples_per_epoch=128', 'train.batch_size=32',
        'train.epochs=1', 'train.tensorboard=false', 'train.final_test=false']
config = read_train_config(Path({str(pipeline)!r}), sets)
t1 = time.perf_counter()
train(config, work / "run")
trained = time.perf_counter() - t1
model, cfg, _ = load_model(work / "run" / "checkpoints" / "last.pt")
slide = open_cache(sorted(cache.glob("*.ome.zarr"))[0])
t2 = time.perf_counter()
scores = score_slide(model, slide, options_from_task(read_options(cfg.task)))
scored = time.perf_counter() - t2
print(json.dumps({{"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "fields": len(scores.fields), "score_s": scored, "train_s": trained,
    "make_s": made, "read_fraction": scores.pixels_read_fraction}}))
"""
    return run_python(script, cwd=ROOT)


def run(out_dir: Path) -> str:
    """Run the benchmark; returns the Markdown section."""
    from wsi_dram.data.tasks import build_task
    from wsi_dram.evaluation.slides import evaluate_slides
    from wsi_dram.training import read_train_config, train
    from wsi_dram.training.checkpoints import load_model

    out_dir = Path(out_dir)
    slides = int(os.environ.get("WSI_DRAM_BENCH_SLIDES", "48"))
    epochs = int(os.environ.get("WSI_DRAM_BENCH_EPOCHS", "0"))
    big = int(os.environ.get("WSI_DRAM_BENCH_BIG", "100000"))
    torch.set_num_threads(2)

    cohort, cache = _cohort(out_dir / "demo", slides, 8192)
    config = read_train_config(PIPELINE, _overrides(cohort, cache, epochs))
    run_dir = out_dir / "run"
    started = time.perf_counter()
    if not (run_dir / "checkpoints" / "last.pt").exists():
        train(config, run_dir)
    train_s = time.perf_counter() - started
    model, cfg, _ = load_model(run_dir / "checkpoints" / "best.pt")
    task = build_task(cfg.task, cfg.sensor_spec())
    runs: list[tuple[str, str, int]] = [
        ("learned", "learned", 0),
        ("center", "center", 0),
    ]
    runs += [(f"random (seed {seed})", "random", seed) for seed in range(5)]
    reports = {
        name: evaluate_slides(
            model,
            task,
            "test",
            out_dir / f"eval_{policy}_{seed}" / "report.json",
            policy,  # type: ignore[arg-type]
            seed=seed,
        )
        for name, policy, seed in runs
    }
    share, step_s = _read_share(config)

    n_test = reports["learned"]["n_slides"]
    lines = [
        f"Synthetic cohort: {slides} slides of 8192 x 8192 px at 0.5 µm/px, "
        f"{n_test} held out for test by slide (`pipelines/synthetic.toml`, "
        f"{cfg.train.epochs} epochs, {train_s:.0f} s of training in this run, 0 "
        "when an existing run was reused). The same checkpoint with each policy:",
        "",
        "| policy | test AUC (95% CI) | accuracy | FROC | pixels read (of tissue) |",
        "|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        ci = r.get("auc_ci") or [float("nan")] * 2
        auc = r.get("auc")
        auc_text = "-" if auc is None else f"{auc:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"
        froc = "-" if r.get("froc") is None else f"{r['froc']:.3f}"
        lines.append(
            f"| {name} | {auc_text} | {r['accuracy']:.3f} | {froc} | "
            f"{100 * r['pixels_read_fraction']:.3f} % |"
        )
    random_aucs = [r["auc"] for n, r in reports.items() if n.startswith("random")]
    if all(a is not None for a in random_aucs) and reports["learned"]["auc"]:
        lines += [
            "",
            f"Random glimpses, 5 seeds: AUC {min(random_aucs):.3f}-"
            f"{max(random_aucs):.3f} (mean {sum(random_aucs) / 5:.3f}) against "
            f"{reports['learned']['auc']:.3f} for the learned policy.",
        ]
    lines += [
        "",
        f"Glimpse reads take {100 * share:.1f} % of a training step "
        f"({step_s:.2f} s per step of {config.train.batch_size} fields, "
        "reads not prefetchable: DESIGN section 7).",
    ]
    if big:
        rss = _big_slide_rss(out_dir / "big", big, PIPELINE)
        lines += [
            "",
            f"A {big} x {big} px synthetic slide: training 4 steps and scoring its "
            f"{rss['fields']} tissue fields peaked at {rss['rss_mib']:.0f} MiB RSS "
            f"(scoring {rss['score_s']:.0f} s, {100 * rss['read_fraction']:.3f} % "
            "of its tissue read).",
        ]
    lines.append(
        f"\nPeak RSS of this benchmark process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB."
    )
    return "\n".join(lines)
