"""Fault soak: ``wsi-dram preprocess`` killed with SIGKILL at random moments.

One *series* runs the real CLI (``python -m wsi_dram.cli preprocess``) on a small
synthetic cohort, kills it with SIGKILL after a random delay (seeded), checks the
cache, reruns it (killed again), ... and finally lets it finish. After every kill:

- every store at its final name ``<id>.ome.zarr`` opens with ``open_cache`` and
  equals an uninterrupted run's store array for array (every level, every label
  level, the set of chunks written, the ``wsi_dram`` attributes) and its tile file
  equals the uninterrupted one (coords, fractions);
- every half-written store (``.<id>.ome.zarr.partial``) is refused by
  ``open_cache``.

After every rerun, the stores finished before it are untouched (same file mtimes)
and, when the rerun reached them, recorded as ``skipped`` in ``manifest.csv``. The
final run leaves every slide equal to the uninterrupted run's.

The same functions back ``tests/faults/test_preprocess_kill.py`` (3 kills);
:func:`run` is the longer soak of ``make bench`` (section ``faults``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from wsi_dram.cache import store
from wsi_dram.cache.manifest import manifest_path, read_manifest
from wsi_dram.errors import CacheError

SOAK_KILLS = 24
SOAK_SERIES = 6

# The cohort and cache options every run of a series uses (CLI and in-process).
CHUNK, BLOCK, WORKERS = 256, 512, 2


@dataclass
class StoreSnapshot:
    """Everything that defines one slide's cache output, read back with numpy.

    Attributes:
        levels: Level k as (3, H_k, W_k) uint8.
        labels: ``"tissue/0"`` ... -> label level arrays.
        chunk_files: Chunk files written, relative to the store (absent = white).
        attrs: The ``wsi_dram`` attributes.
        tiles: ``coords`` (N, 2), ``tissue_fraction``, ``tumor_fraction``.
    """

    levels: list[np.ndarray]
    labels: dict[str, np.ndarray]
    chunk_files: set[str]
    attrs: dict[str, Any]
    tiles: dict[str, np.ndarray]


def snapshot_store(cache_dir: Path, slide_id: str) -> StoreSnapshot:
    """Read a finished slide's store and tile file straight from disk.

    Args:
        cache_dir: The cache folder.
        slide_id: The slide id.

    Returns:
        The snapshot (arrays read with zarr and h5py, not through the cache API).
    """
    path = store.store_path(cache_dir, slide_id)
    root: Any = zarr.open_group(str(path), mode="r", zarr_format=2)
    attrs = json.loads((path / ".zattrs").read_text())[store.ATTRS_KEY]
    count = int(attrs["levels"])
    levels = [np.asarray(root[str(k)][...]) for k in range(count)]
    labels: dict[str, np.ndarray] = {}
    for name in ("tissue", "tumor"):
        k = 0
        while (path / "labels" / name / str(k)).is_dir():
            labels[f"{name}/{k}"] = np.asarray(root[f"labels/{name}/{k}"][...])
            k += 1
    chunk_files = {
        str(p.relative_to(path))
        for k in range(count)
        for p in (path / str(k)).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    with h5py.File(store.tiles_path(cache_dir, slide_id), "r") as f:
        tiles = {key: np.asarray(f[key][...]) for key in f}
    return StoreSnapshot(levels, labels, chunk_files, attrs, tiles)


def diff_snapshots(got: StoreSnapshot, want: StoreSnapshot) -> list[str]:
    """What differs between two snapshots (empty when equal array for array)."""
    out = []
    if len(got.levels) != len(want.levels):
        out.append(f"{len(got.levels)} levels, want {len(want.levels)}")
    for k, (a, b) in enumerate(zip(got.levels, want.levels, strict=False)):
        if a.shape != b.shape or not np.array_equal(a, b):
            out.append(f"level {k} differs")
    if set(got.labels) != set(want.labels):
        out.append(f"labels {sorted(got.labels)} != {sorted(want.labels)}")
    for key in set(got.labels) & set(want.labels):
        if not np.array_equal(got.labels[key], want.labels[key]):
            out.append(f"label {key} differs")
    if got.chunk_files != want.chunk_files:
        out.append(f"chunk files differ: {sorted(got.chunk_files ^ want.chunk_files)}")
    if got.attrs != want.attrs:
        keys = {k for k in got.attrs.keys() | want.attrs.keys()}
        bad = sorted(k for k in keys if got.attrs.get(k) != want.attrs.get(k))
        out.append(f"attributes differ: {bad}")
    if set(got.tiles) != set(want.tiles):
        out.append(f"tile datasets {sorted(got.tiles)} != {sorted(want.tiles)}")
    for key in set(got.tiles) & set(want.tiles):
        if not np.array_equal(got.tiles[key], want.tiles[key]):
            out.append(f"tiles {key} differs")
    return out


def store_mtimes(cache_dir: Path, slide_id: str) -> dict[str, int]:
    """Nanosecond mtimes of every file of a slide's store and its tile file."""
    path = store.store_path(cache_dir, slide_id)
    files = [p for p in path.rglob("*") if p.is_file()]
    files.append(store.tiles_path(cache_dir, slide_id))
    return {str(p): p.stat().st_mtime_ns for p in files}


@dataclass
class KillRun:
    """One CLI run: killed (``killed``) or finished by itself (``returncode``)."""

    delay: float
    killed: bool
    returncode: int
    stderr: str


def run_cli(
    args: list[str],
    kill_after: float | None = None,
    kill_when: Callable[[], bool] | None = None,
    timeout: float = 300.0,
) -> KillRun:
    """Run ``python -m wsi_dram.cli ARGS``; SIGKILL it ``kill_after`` s into its work.

    The delay counts from the first line the process logs (its imports done and
    its first slide opened), so it lands in the work, not in Python's start-up;
    with ``kill_when``, from the first moment ``kill_when()`` is true (polled
    every 2 ms), e.g. once a half-written store exists.

    Args:
        args: CLI arguments.
        kill_after: Seconds after the trigger; None lets the run finish.
        kill_when: Trigger condition (default: the first log line).
        timeout: Upper bound on the run (a hung run is killed and reported).

    Returns:
        The outcome, with the process's stderr.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsi_dram.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    started = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            started.set()
        started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    if kill_after is not None:
        if kill_when is None:
            started.wait(timeout)
        else:
            deadline = time.monotonic() + timeout
            while not kill_when() and proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.002)
        time.sleep(kill_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed = True
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    reader.join(10)
    return KillRun(kill_after or 0.0, killed, code, "".join(lines))


def preprocess_args(slides: list[Path], cache_dir: Path, annotations: Path) -> list:
    """CLI arguments of the series (the same options as :func:`baseline`)."""
    return [
        "preprocess",
        *[str(s) for s in slides],
        "--cache",
        str(cache_dir),
        "--annotations",
        str(annotations),
        "--chunk",
        str(CHUNK),
        "--block",
        str(BLOCK),
        "--workers",
        str(WORKERS),
    ]


def baseline(
    slides: list[Path], cache_dir: Path, annotations: Path
) -> tuple[dict[str, StoreSnapshot], float]:
    """An uninterrupted in-process run: its snapshots and its duration (s)."""
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess

    options = PreprocessOptions(chunk=CHUNK, block=BLOCK, workers=WORKERS)
    started = time.perf_counter()
    rows = preprocess(slides, cache_dir, annotations, options)
    seconds = time.perf_counter() - started
    bad = [r for r in rows if r.status != "done"]
    if bad:
        raise RuntimeError(f"baseline run failed: {bad}")
    return {r.slide_id: snapshot_store(cache_dir, r.slide_id) for r in rows}, seconds


@dataclass
class SeriesReport:
    """What one kill series saw.

    Attributes:
        kills: Runs killed by SIGKILL.
        finished_early: Runs that finished before their kill time.
        partial_seen: Kills that left a half-written store behind.
        finished_after_kill: Number of finished stores after each kill.
        problems: Every violation found (empty: the series passed).
        final_status: Slide id -> status of the final (unkilled) run.
    """

    kills: int = 0
    finished_early: int = 0
    partial_seen: int = 0
    finished_after_kill: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    final_status: dict[str, str] = field(default_factory=dict)


def check_cache(
    cache_dir: Path, want: dict[str, StoreSnapshot]
) -> tuple[set[str], int, list[str]]:
    """Check a cache left by a killed run.

    Returns:
        (slide ids whose store is at its final name, half-written stores seen,
        problems).
    """
    problems: list[str] = []
    finished: set[str] = set()
    for slide_id, snap in want.items():
        final = store.store_path(cache_dir, slide_id)
        if not final.exists():
            continue
        try:
            store.open_cache(final)
        except CacheError as exc:
            problems.append(f"{slide_id}: final store refused: {exc}")
            continue
        finished.add(slide_id)
        diffs = diff_snapshots(snapshot_store(cache_dir, slide_id), snap)
        problems += [f"{slide_id}: {d}" for d in diffs]
    partial = 0
    for path in cache_dir.glob(f".*{store.STORE_SUFFIX}.partial"):
        partial += 1
        try:
            store.open_cache(path)
            problems.append(f"{path.name}: half-written store opened as finished")
        except CacheError:
            pass
    return finished, partial, problems


def partial_exists(cache_dir: Path) -> Callable[[], bool]:
    """A trigger: true once a half-written store exists in ``cache_dir``."""

    def check() -> bool:
        return any(cache_dir.glob(f".*{store.STORE_SUFFIX}.partial"))

    return check


def kill_series(
    slides: list[Path],
    cache_dir: Path,
    annotations: Path,
    want: dict[str, StoreSnapshot],
    kills: int,
    rng: np.random.Generator,
    work_seconds: float,
) -> SeriesReport:
    """Deliver ``kills`` SIGKILLs at random moments, then finish; check after each.

    Even kills: a delay uniform in ``[0, work_seconds * f]`` after the first log
    line, ``f`` the fraction of slides not yet finished, so kills land in the work
    a rerun still has. Odd kills: a short random delay after a half-written store
    appears (the pyramid being written). A run
    that finishes before its kill time is checked like a final run and the cache
    is then emptied, so the remaining kills start from scratch again.

    Args:
        slides: The slide files.
        cache_dir: A fresh cache folder for the series.
        annotations: The annotation folder.
        want: Snapshots of an uninterrupted run (:func:`baseline`).
        kills: SIGKILLs to deliver.
        rng: Draws the delays.
        work_seconds: Time an uninterrupted run spends working.
    """
    report = SeriesReport()
    args = preprocess_args(slides, cache_dir, annotations)
    finished: dict[str, dict[str, int]] = {}  # id -> mtimes when first seen finished
    while True:
        last = report.kills >= kills
        left = 1.0 - len(finished) / len(want)
        delay = None if last else float(rng.uniform(0.0, work_seconds * left))
        trigger = None
        if not last and report.kills % 2 == 1 and left > 0:
            # every other kill lands while a store is being written
            delay = float(rng.uniform(0.0, 0.3 * work_seconds / len(want)))
            trigger = partial_exists(cache_dir)
        outcome = run_cli(args, delay, trigger)
        rows = {r.slide_id: r.status for r in read_manifest(manifest_path(cache_dir))}
        for slide_id, mtimes in finished.items():
            if store_mtimes(cache_dir, slide_id) != mtimes:
                report.problems.append(f"{slide_id}: finished store was rebuilt")
        if not outcome.killed and outcome.returncode != 0:
            report.problems.append(
                f"run exited {outcome.returncode}: {outcome.stderr[-2000:]}"
            )
            return report
        done, partial, problems = check_cache(cache_dir, want)
        report.problems += problems
        if outcome.killed:
            report.kills += 1
            report.partial_seen += int(partial > 0)
            report.finished_after_kill.append(len(done))
            for slide_id in done - set(finished):
                finished[slide_id] = store_mtimes(cache_dir, slide_id)
            continue
        for slide_id in finished:
            if rows.get(slide_id) != "skipped":
                report.problems.append(
                    f"{slide_id}: finished earlier but recorded "
                    f"{rows.get(slide_id)!r}, not 'skipped'"
                )
        missing = set(want) - done
        if missing:
            report.problems.append(f"not finished after a full run: {sorted(missing)}")
        if partial:
            report.problems.append("half-written stores left after a full run")
        report.final_status = rows
        if last:
            return report
        report.finished_early += 1
        store.remove_store(cache_dir)
        finished = {}


def make_inputs(
    out: Path, slides: int = 3, side: int = 2048, seed: int = 7
) -> list[Path]:
    """A small synthetic cohort (square slides of ``side`` px) for the series."""
    from wsi_dram.synth import make_cohort

    cohort = make_cohort(out, slides=slides, size=(side, side), seed=seed)
    return [s.path for s in cohort]


def run(out_dir: Path) -> str:
    """The soak: ``SOAK_SERIES`` series, ``SOAK_KILLS`` SIGKILLs in all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cohort = out_dir / "cohort"
    slides = make_inputs(cohort)
    want, seconds = baseline(slides, out_dir / "baseline", cohort)
    rng = np.random.default_rng(2026)
    per_series = -(-SOAK_KILLS // SOAK_SERIES)
    reports = []
    started = time.perf_counter()
    for i in range(SOAK_SERIES):
        cache_dir = out_dir / f"series_{i}"
        store.remove_store(cache_dir)
        reports.append(
            kill_series(slides, cache_dir, cohort, want, per_series, rng, seconds)
        )
    wall = time.perf_counter() - started
    kills = sum(r.kills for r in reports)
    problems = [p for r in reports for p in r.problems]
    skipped = sum(sum(s == "skipped" for s in r.final_status.values()) for r in reports)
    after = [n for r in reports for n in r.finished_after_kill]
    lines = [
        "## Faults: preprocessing killed with SIGKILL, then rerun",
        "",
        f"{len(slides)} synthetic slides of 2048 x 2048 px, chunk {CHUNK}, block "
        f"{BLOCK}; an uninterrupted run works {seconds:.1f} s. "
        f"{SOAK_SERIES} series of {per_series} SIGKILLs each (seed 2026), then a "
        "full rerun: every other kill at a uniform random delay after the run's "
        "first log line, the others shortly after a half-written store appears.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| SIGKILLs delivered | {kills} |",
        f"| runs that finished before their kill time | "
        f"{sum(r.finished_early for r in reports)} |",
        f"| kills that left a half-written store | "
        f"{sum(r.partial_seen for r in reports)} |",
        f"| finished stores after each kill (min / mean / max) | "
        f"{min(after, default=0)} / {np.mean(after) if after else 0:.1f} / "
        f"{max(after, default=0)} |",
        f"| slides skipped (not rebuilt) by the final runs | {skipped} |",
        f"| half-written stores taken for finished | "
        f"{sum('half-written' in p for p in problems)} |",
        f"| final caches differing from the uninterrupted run | "
        f"{sum('differ' in p for p in problems)} |",
        f"| violations in all | {len(problems)} |",
        f"| soak wall time | {wall:.0f} s |",
        "",
        "Outcome: " + ("**pass**" if not problems else "**FAIL**: " + problems[0]),
    ]
    return "\n".join(lines)
