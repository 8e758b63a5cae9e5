"""Shared inputs of the fault tests: a small synthetic cohort and its clean cache."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsi_dram.benchmarks import faults


@dataclass
class CleanRun:
    """A cohort of two 1024 px slides and an uninterrupted run's cache.

    Attributes:
        cohort: Folder of ``synth_000.tif``, ``synth_001.tif`` and their XML.
        slides: The two slide files.
        cache: The uninterrupted run's cache folder (treat as read-only).
        want: Snapshots of every slide's store and tile file.
        seconds: How long the uninterrupted run worked.
    """

    cohort: Path
    slides: list[Path]
    cache: Path
    want: dict[str, faults.StoreSnapshot]
    seconds: float

    def copy_cache(self, dest: Path) -> Path:
        """A private copy of the clean cache (to damage)."""
        shutil.copytree(self.cache, dest)
        return dest


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    root = tmp_path_factory.mktemp("faults")
    cohort = root / "cohort"
    slides = faults.make_inputs(cohort, slides=2, side=1024, seed=7)
    want, seconds = faults.baseline(slides, root / "clean", cohort)
    return CleanRun(cohort, slides, root / "clean", want, seconds)
