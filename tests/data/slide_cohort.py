"""A tiny synthetic cohort + cache shared by the slide-task, scoring and training tests.

Built once per test session (and per pytest-xdist worker) under pytest's base
temporary folder: four 1536 x 1536 slides (two with tumour), cached with a deep
pyramid so a 2-scale glimpse and the context view have their levels. Import the
fixture into a test module with ``from tests.data.slide_cohort import
slide_cohort  # noqa: F401``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
from wsi_dram.synth import make_cohort

SLIDES = 4
SIZE = (1536, 1536)
SEED = 3


@dataclass(frozen=True)
class SlideCohort:
    """Paths of the tiny cohort."""

    root: Path
    cohort: Path
    cache: Path
    labels: Path
    ids: tuple[str, ...]
    tumour_ids: tuple[str, ...]


_BUILT: dict[Path, SlideCohort] = {}


def build_cohort(root: Path) -> SlideCohort:
    """Write (once) the cohort and its cache under ``root``."""
    if root in _BUILT:
        return _BUILT[root]
    cohort, cache = root / "cohort", root / "cache"
    if not (cache / "manifest.csv").exists():
        make_cohort(cohort, slides=SLIDES, size=SIZE, seed=SEED, workers=1)
        options = PreprocessOptions(qc=False, workers=1, min_side=64)
        rows = preprocess(sorted(cohort.glob("*.tif")), cache, cohort, options)
        assert all(r.status == "done" for r in rows), [r.error for r in rows]
    with open(cohort / "labels.csv", newline="") as fh:
        labels = {r["slide_id"]: int(r["label"]) for r in csv.DictReader(fh)}
    built = SlideCohort(
        root=root,
        cohort=cohort,
        cache=cache,
        labels=cohort / "labels.csv",
        ids=tuple(sorted(labels)),
        tumour_ids=tuple(sorted(s for s, v in labels.items() if v == 1)),
    )
    _BUILT[root] = built
    return built


@pytest.fixture(scope="session")
def slide_cohort(tmp_path_factory: Any) -> SlideCohort:
    """The tiny cohort (built on first use in the session)."""
    return build_cohort(tmp_path_factory.getbasetemp() / "slide_cohort")


def region_config(data: SlideCohort, /, **options: Any) -> Any:
    """A TrainConfig of the region task over the tiny cohort (small model)."""
    from wsi_dram.training.config import TrainConfig

    config = TrainConfig()
    config.task.kind = "slide_regions"
    merged = {
        "cache_dir": data.cache,
        "labels": data.labels,
        "split_fractions": [0.5, 0.5, 0.0],
        "field_size": 512,
        "samples_per_epoch": 16,
        "eval_fields_per_slide": 4,
        "eval_batch_size": 8,
        **options,
    }
    config.task.options = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in merged.items()
        if v is not None
    }
    m = config.model
    m.glimpses, m.glimpse_size, m.scales, m.context_size = 2, 16, 2, 16
    m.hidden, m.hidden_where = 32, 32
    m.conv_channels, m.context_channels = [4, 8], [4, 8]
    t = config.train
    t.epochs, t.batch_size, t.eval_batch_size, t.threads = 2, 8, 8, 1
    t.tensorboard, t.final_test, t.device = False, False, "cpu"
    return config
