"""Whole-slide tasks over cached slides: the region task and the slide task.

Both read glimpses straight from the cache (``<cache_dir>/<slide_id>.ome.zarr``)
through :class:`~wsi_dram.glimpse.slide.SlideSensor`, and split the cohort BY
SLIDE (no slide is in two splits). The cohort comes from ``[task.options]``:

* ``cohort``: a ``slide_id,split,label`` CSV (``data_manifests/camelyon16.csv``);
  splits "train" and "test", and "val" carved out of "train" by
  ``val_fraction`` (stratified, seeded by ``split_seed``); unknown test labels are
  filled from the organisers' ``reference`` file;
* or ``labels``: a ``slide_id,label`` CSV (``labels.csv`` of ``wsi-dram synth``),
  split by ``split_fractions`` (train, val, test), stratified and seeded.

Region task (``kind = "slide_regions"``): square fields of side ``field_size``
level-0 px on a grid of step ``position_step`` over the tissue. A field is tumour
(1) when the cache's tumour label covers more than ``tumor_fraction`` of it,
normal (0) when it covers none; fields in between are dropped. Training draws
``samples_per_epoch`` fields per epoch, half tumour and half normal, depending
only on ``(seed, epoch)``; "val" and "test" are a fixed set of
``eval_fields_per_slide`` fields per slide. The context is the field at a coarse
level (``SlideSensor.context``). The slide score of this task is the aggregate
of a grid of field probabilities (:mod:`wsi_dram.evaluation.scoring`).

Slide task (``kind = "slide"``): one field per slide, the square around its
tissue bounding box; the context is the whole tissue seen coarsely (the
thumbnail), the label is the slide's.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from wsi_dram.cache.store import CachedSlide, open_cache
from wsi_dram.cache.tiles import read_tiles
from wsi_dram.data.tasks import (
    SensorSpec,
    Task,
    TaskConfig,
    epoch_seed,
    register_task,
    task_options,
)
from wsi_dram.errors import ConfigError, DataError
from wsi_dram.glimpse.slide import SlideSensor

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SlideTaskOptions:
    """``[task.options]`` of the slide tasks.

    Attributes:
        cache_dir: Folder of ``<slide_id>.ome.zarr`` stores and ``.h5`` tile grids.
        cohort: ``slide_id,split,label`` CSV (splits train/test), or None.
        labels: ``slide_id,label`` CSV split by ``split_fractions``, or None.
        reference: The organisers' test reference (fills unknown test labels).
        split_fractions: Train, val and test shares of ``labels`` (stratified).
        val_fraction: Share of the cohort's train slides held out as "val".
        split_seed: Seed of the slide splits (independent of the training seed).
        exclude_training: slide_id -> reason; left out of train and val.
        exclude_slide_scoring: slide_id -> reason; left out of slide evaluation.
        exclude_lesion_scoring: slide_id -> reason; left out of the FROC.
        field_size: Side of a field in level-0 px (region task).
        position_step: Grid step of field origins in level-0 px (0: field/8); a
            multiple of the label raster's pixel.
        tumor_fraction: A field is tumour when the tumour label covers more.
        samples_per_epoch: Training fields per epoch (balanced).
        centred_tumour: Share of the training tumour fields centred (within
            ``field_size / 8``) on a random tumour pixel; the others lie
            anywhere on the grid. Centred fields teach the "what" path the tumour
            early, while the glimpses still land near the centre; off-centre ones
            reward the policy for finding it.
        hard_normal: Share of the training normal fields centred (within
            ``field_size / 8``) on the darkest tissue at low power (the darkest
            ``hard_quantile`` of the tissue pixels of the coarsest level): hard
            negatives, normal regions that look like tumour at low power (dense
            lymphoid tissue), so that the "what" path learns what tells them
            apart. The others lie anywhere on the tissue.
        hard_quantile: See ``hard_normal``.
        eval_fields_per_slide: Fixed val/test fields per slide (region accuracy).
        base_level: Finest cache level a glimpse reads.
        score_stride: Level-0 px between scored fields (0: ``field_size``).
        score_min_tissue: Smallest tissue share of a field that is scored.
        aggregate: Slide score from field probabilities: "max" or "topk".
        top_k: Fields averaged by "topk".
        lesion_threshold: Smallest field probability of a lesion candidate.
        lesion_merge_um: Candidates closer than this (µm) are merged, the
            stronger kept (overlapping fields that found the same spot).
        eval_batch_size: Fields per batch when scoring slides.
        allow_missing: Skip cohort slides absent from the cache (else an error).
    """

    cache_dir: Path = Path("demo_out/cache")
    cohort: Path | None = None
    labels: Path | None = None
    reference: Path | None = None
    split_fractions: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.25])
    val_fraction: float = 0.15
    split_seed: int = 0
    exclude_training: dict[str, str] = field(default_factory=dict)
    exclude_slide_scoring: dict[str, str] = field(default_factory=dict)
    exclude_lesion_scoring: dict[str, str] = field(default_factory=dict)
    field_size: int = 2048
    position_step: int = 0
    tumor_fraction: float = 0.05
    samples_per_epoch: int = 2048
    centred_tumour: float = 0.0
    hard_normal: float = 0.0
    hard_quantile: float = 0.02
    eval_fields_per_slide: int = 8
    base_level: int = 0
    score_stride: int = 0
    score_min_tissue: float = 0.05
    aggregate: str = "max"
    top_k: int = 3
    lesion_threshold: float = 0.5
    lesion_merge_um: float = 100.0
    eval_batch_size: int = 64
    allow_missing: bool = False


@dataclass
class CohortSlide:
    """One slide of a split: id, label (None when unknown) and its cache."""

    slide_id: str
    label: int | None
    cache: CachedSlide


def read_options(config: TaskConfig) -> SlideTaskOptions:
    """Check ``[task.options]`` and its ranges.

    Raises:
        ConfigError: An unknown key, a wrong type or a value out of range.
    """
    opts = task_options(config, SlideTaskOptions)
    if (opts.cohort is None) == (opts.labels is None):
        raise ConfigError("set exactly one of task.options.cohort and .labels")
    rules = [
        (opts.field_size >= 64, "task.options.field_size must be >= 64"),
        (0.0 <= opts.tumor_fraction < 1.0, "task.options.tumor_fraction in [0, 1)"),
        (0.0 <= opts.centred_tumour <= 1.0, "task.options.centred_tumour in [0, 1]"),
        (0.0 <= opts.hard_normal <= 1.0, "task.options.hard_normal in [0, 1]"),
        (0.0 < opts.hard_quantile <= 1.0, "task.options.hard_quantile in (0, 1]"),
        (opts.samples_per_epoch >= 2, "task.options.samples_per_epoch must be >= 2"),
        (opts.aggregate in ("max", "topk"), 'task.options.aggregate: "max"|"topk"'),
        (opts.top_k >= 1, "task.options.top_k must be >= 1"),
        (opts.lesion_merge_um >= 0, "task.options.lesion_merge_um must be >= 0"),
        (len(opts.split_fractions) == 3, "task.options.split_fractions: 3 shares"),
        (
            all(0.0 <= f <= 1.0 for f in opts.split_fractions)
            and sum(opts.split_fractions) <= 1.0 + 1e-9,
            "task.options.split_fractions: each share in [0, 1], sum <= 1, got "
            f"{opts.split_fractions}",
        ),
        (0.0 <= opts.val_fraction < 1.0, "task.options.val_fraction in [0, 1)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    return opts


def _read_labels(path: Path) -> list[tuple[str, int]]:
    if not Path(path).is_file():
        raise DataError("labels file not found", path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"slide_id", "label"} <= set(rows[0]):
        raise DataError("labels file needs columns slide_id,label", path)
    out = []
    for line, row in enumerate(rows, start=2):
        if row["label"] not in ("0", "1"):
            raise DataError(f"line {line}: label must be 0 or 1", path)
        out.append((row["slide_id"], int(row["label"])))
    return out


def stratified_split(
    items: list[tuple[str, int]], fractions: list[float], seed: int
) -> list[list[tuple[str, int]]]:
    """Split labelled slides into parts by share, class by class, seeded.

    Each class is shuffled by ``seed`` and cut at the cumulative shares (rounded),
    so every part gets about its share of tumour and of normal slides.

    Returns:
        One list of ``(slide_id, label)`` per share, each sorted by slide id.
    """
    total = float(sum(fractions))
    if total <= 0 or min(fractions) < 0:
        raise ConfigError(f"split shares must be >= 0 with a positive sum: {fractions}")
    cuts = np.cumsum(fractions) / total
    parts: list[list[tuple[str, int]]] = [[] for _ in fractions]
    for label in sorted({lab for _, lab in items}):
        ids = sorted(s for s, lab in items if lab == label)
        order = np.random.default_rng([seed, label]).permutation(len(ids))
        bounds = [0] + [int(round(c * len(ids))) for c in cuts]
        for p in range(len(fractions)):
            parts[p] += [(ids[i], label) for i in order[bounds[p] : bounds[p + 1]]]
    return [sorted(p) for p in parts]


def cohort_splits(opts: SlideTaskOptions) -> dict[str, list[tuple[str, int | None]]]:
    """slide_id and label of every slide of each split (disjoint by slide)."""
    if opts.labels is not None:
        items = [
            (s, lab) for s, lab in _read_labels(opts.labels)
            if s not in opts.exclude_training
        ]  # fmt: skip
        parts = stratified_split(items, opts.split_fractions, opts.split_seed)
        return {
            split: list[tuple[str, int | None]](part)
            for split, part in zip(SPLITS, parts, strict=True)
        }

    from wsi_dram.evaluation.reference import (
        apply_reference,
        load_cohort_manifest,
        read_reference,
    )

    assert opts.cohort is not None
    rows = load_cohort_manifest(opts.cohort)
    if opts.reference is not None:
        rows = apply_reference(rows, read_reference(opts.reference))
    train = [
        (r.slide_id, int(r.label)) for r in rows
        if r.split == "train" and r.label is not None
        and r.slide_id not in opts.exclude_training
    ]  # fmt: skip
    kept, val = stratified_split(
        train, [1.0 - opts.val_fraction, opts.val_fraction], opts.split_seed
    )
    test = [(r.slide_id, r.label) for r in rows if r.split == "test"]
    return {"train": list(kept), "val": list(val), "test": test}


def open_split_slides(
    opts: SlideTaskOptions, ids: list[tuple[str, int | None]]
) -> list[CohortSlide]:
    """Open the cache of every slide of a split (missing ones skipped if allowed)."""
    slides, missing = [], []
    for slide_id, label in ids:
        path = Path(opts.cache_dir) / f"{slide_id}.ome.zarr"
        if not path.exists() and opts.allow_missing:
            missing.append(slide_id)
            continue
        slides.append(CohortSlide(slide_id, label, open_cache(path)))
    if missing:
        log.warning("%d cohort slides not in the cache, skipped", len(missing))
    return slides


class _Integral:
    """Summed-area table of a label raster, queried in level-0 boxes.

    Args:
        mask: (h, w) bool label raster.
        downsample: Level-0 px per raster px.
    """

    def __init__(self, mask: np.ndarray, downsample: float) -> None:
        self.d = float(downsample)
        self.shape = mask.shape
        # int32 while the count fits (half the memory on a 100k px slide), summed
        # in place: no temporary tables (3x the table's memory before).
        dtype = np.int32 if mask.size < 2**31 else np.int64
        table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
        inner = table[1:, 1:]
        inner[...] = mask
        np.cumsum(inner, axis=0, out=inner)
        np.cumsum(inner, axis=1, out=inner)
        self.table = table

    def count(self, boxes: np.ndarray) -> np.ndarray:
        """(N,) label pixels set in (N, 4) level-0 ``(x0, y0, x1, y1)`` boxes.

        Box edges are rounded to the nearest raster pixel edge (exact when they
        are multiples of the raster's pixel).
        """
        h, w = self.shape
        b = np.rint(np.asarray(boxes, np.float64) / self.d).astype(np.int64)
        c0, c1 = np.clip(b[:, 0], 0, w), np.clip(b[:, 2], 0, w)
        r0, r1 = np.clip(b[:, 1], 0, h), np.clip(b[:, 3], 0, h)
        t = self.table
        count = t[r1, c1].astype(np.int64) - t[r0, c1] - t[r1, c0] + t[r0, c0]
        return count

    def fraction(self, boxes: np.ndarray) -> np.ndarray:
        """(N,) share of each box's area covered (area counted in raster px)."""
        b = np.asarray(boxes, np.float64)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / self.d**2
        return self.count(boxes) / np.maximum(area, 1e-9)


@dataclass
class _SlideFields:
    """Candidate field origins of one slide (region task)."""

    tumour: np.ndarray  # (P, 2) level-0 (x, y) origins of tumour fields
    tissue: np.ndarray  # (Q, 2) level-0 (x, y) centres of tissue tiles
    integral: _Integral | None  # tumour label (None: normal slide)
    tumour_px: np.ndarray = field(  # (R, 2) level-0 (x, y) centres of label px
        default_factory=lambda: np.zeros((0, 2), np.int64)
    )
    dark_px: np.ndarray = field(  # (S, 2) level-0 (x, y) of the darkest tissue
        default_factory=lambda: np.zeros((0, 2), np.int64)
    )


def _dark_tissue(slide: CachedSlide, quantile: float) -> np.ndarray:
    """(S, 2) level-0 ``(x, y)`` centres of the coarsest level's pixels that are
    tissue and among the darkest ``quantile`` of the tissue (mean of R, G, B,
    smoothed over about 25 µm)."""
    rgb, ds = slide.thumbnail()
    mask, d = slide.tissue_mask()
    rows, cols = np.mgrid[0 : rgb.shape[0], 0 : rgb.shape[1]]
    my = np.minimum(((rows + 0.5) * ds / d).astype(np.int64), mask.shape[0] - 1)
    mx = np.minimum(((cols + 0.5) * ds / d).astype(np.int64), mask.shape[1] - 1)
    tissue = mask[my, mx]
    if not tissue.any():
        return np.zeros((0, 2), np.int64)
    # smoothed over about 25 µm, so that a dense region outranks pixel noise
    sigma = max(25.0 / slide.mpp / ds, 0.5)
    grey = ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), sigma)
    cut = np.quantile(grey[tissue], quantile)
    r, c = np.nonzero(tissue & (grey <= cut))
    return (np.stack([c, r], axis=1) * ds + ds / 2).astype(np.int64)


def _region_fields(
    slide: CachedSlide,
    cache_dir: Path,
    opts: SlideTaskOptions,
    step: int,
    hard: bool = False,
) -> _SlideFields:
    """Candidate fields of one slide; ``hard`` also finds its dark tissue (the
    hard-negative centres, needed by training draws only)."""
    tiles = read_tiles(Path(cache_dir) / f"{slide.slide_id}.h5")
    side = tiles.patch_size * 2**tiles.patch_level
    centres = tiles.coords + side // 2  # (Q, 2)
    dark = (
        _dark_tissue(slide, opts.hard_quantile)
        if hard and opts.hard_normal > 0
        else np.zeros((0, 2), np.int64)
    )
    tumour_mask = slide.tumor_mask()
    if tumour_mask is None or not tumour_mask[0].any():
        return _SlideFields(np.zeros((0, 2), np.int64), centres, None, dark_px=dark)
    integral = _Integral(*tumour_mask)
    f = opts.field_size
    xs = np.arange(-f + step, slide.width, step, dtype=np.int64)
    ys = np.arange(-f + step, slide.height, step, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    origins = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (N, 2)
    boxes = np.concatenate([origins, origins + f], axis=1)
    frac = integral.fraction(boxes)
    mask, d = tumour_mask
    rows, cols = np.nonzero(mask)
    tumour_px = (np.stack([cols, rows], axis=1) * d + d / 2).astype(np.int64)
    return _SlideFields(
        origins[frac > opts.tumor_fraction], centres, integral, tumour_px, dark
    )


def _label_of(
    fields: _SlideFields, origins: np.ndarray, opts: SlideTaskOptions
) -> np.ndarray:
    """(N,) 1 tumour, 0 normal, -1 ambiguous for fields at (N, 2) origins."""
    if fields.integral is None:
        return np.zeros(len(origins), np.int64)
    boxes = np.concatenate([origins, origins + opts.field_size], axis=1)
    count = fields.integral.count(boxes)
    frac = fields.integral.fraction(boxes)
    return np.where(frac > opts.tumor_fraction, 1, np.where(count == 0, 0, -1))


def _pooled(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-slide (k, 2) arrays -> (owner (K,) slide index, pool (K, 2))."""
    owner = np.concatenate([np.full(len(a), i) for i, a in enumerate(arrays)])
    return owner, np.concatenate(arrays)


def _normal_origins(
    fields: _SlideFields, n: int, opts: SlideTaskOptions, step: int,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """Up to n origins of normal fields near tissue tiles (seeded, rejection)."""
    if len(fields.tissue) == 0 or n == 0:
        return np.zeros((0, 2), np.int64)
    out: list[np.ndarray] = []
    have = 0
    for _ in range(20):
        pick = fields.tissue[rng.integers(0, len(fields.tissue), 2 * n + 8)]
        jitter = rng.uniform(-0.5, 0.5, pick.shape) * opts.field_size
        origins = pick + jitter - opts.field_size / 2
        origins = (np.floor(origins / step) * step).astype(np.int64)
        origins = origins[_label_of(fields, origins, opts) == 0]
        out.append(origins)
        have += len(origins)
        if have >= n:
            break
    return np.concatenate(out)[:n]


class RegionTask:
    """Tumour vs normal fields of cached slides (see the module docstring).

    Items of a split are ``(slide index, x0, y0, label)``; ``batches`` wraps
    each batch's fields in one :class:`SlideSensor`.
    """

    num_classes = 2
    channels = 3
    class_names = ["normal", "tumor"]
    slide_level = True

    def __init__(self, config: TaskConfig, sensor: SensorSpec) -> None:
        self.config = config
        self.spec = sensor
        self.opts = read_options(config)
        o = self.opts
        ids = cohort_splits(o)
        self.slides = {s: open_split_slides(o, ids[s]) for s in SPLITS}
        if not self.slides["train"]:
            raise DataError("the train split has no slide", o.labels or o.cohort)
        # Field origins on a grid of the label raster's pixels: exact fractions.
        pixel = 2 ** int(self.slides["train"][0].cache.mask_level)
        step = o.position_step or o.field_size // 8
        self.step = max(pixel, -(-step // pixel) * pixel)
        self._fields: dict[str, list[_SlideFields]] = {}
        self._eval_items: dict[str, np.ndarray] = {}
        log.info(
            "region task: %s slides (train/val/test), field %d px, step %d px",
            "/".join(str(len(self.slides[s])) for s in SPLITS),
            o.field_size,
            self.step,
        )

    def fields_of(self, split: str) -> list[_SlideFields]:
        """Candidate fields of every slide of ``split`` (computed once)."""
        if split not in self._fields:
            self._fields[split] = [
                _region_fields(
                    s.cache,
                    self.opts.cache_dir,
                    self.opts,
                    self.step,
                    hard=split == "train",
                )  # fmt: skip
                for s in self.slides[split]
            ]
        return self._fields[split]

    def split_slides(self, split: str) -> list[CohortSlide]:
        """The slides of a split, in id order."""
        if split not in self.slides:
            raise ConfigError(f"split {split!r} is unknown; known: {', '.join(SPLITS)}")
        return self.slides[split]

    def items(self, split: str, epoch: int = 0, seed: int = 0) -> np.ndarray:
        """(N, 4) int64 ``(slide index, x0, y0, label)`` of a split's fields.

        "train": ``samples_per_epoch`` fields, balanced, shuffled, depending only
        on ``(seed, epoch)``; other splits: the fixed per-slide fields.
        """
        self.split_slides(split)
        if split != "train":
            if split not in self._eval_items:
                self._eval_items[split] = self._fixed_items(split)
            return self._eval_items[split]
        rng = np.random.default_rng(epoch_seed(seed, epoch, 0, stream=11))
        return self._draw(split, self.opts.samples_per_epoch, rng, shuffle=True)

    def _draw(
        self, split: str, n: int, rng: np.random.Generator, shuffle: bool
    ) -> np.ndarray:
        fields = self.fields_of(split)
        pos_total = sum(len(f.tumour) for f in fields)
        n_pos = n // 2 if pos_total else 0
        parts = []
        if n_pos:
            centred = self._centred(
                fields, round(n_pos * self.opts.centred_tumour), rng
            )
            parts.append(centred)
            n_grid = n_pos - len(centred)
            owner, pool = _pooled([f.tumour for f in fields])
            pick = rng.integers(0, len(pool), n_grid)
            parts.append(np.column_stack([owner[pick], pool[pick], np.ones(n_grid)]))
        hard = self._around(
            fields,
            [f.dark_px for f in fields],
            round((n - n_pos) * self.opts.hard_normal),
            0,
            rng,
        )
        parts.append(hard)
        weights = np.array([len(f.tissue) for f in fields], np.float64)
        if weights.sum() == 0:
            raise DataError(f"no tissue tile in the {split} split", self.opts.cache_dir)
        n_neg = n - n_pos - len(hard)
        slide_of = rng.choice(len(fields), n_neg, p=weights / weights.sum())
        for i in np.unique(slide_of):
            k = int((slide_of == i).sum())
            origins = _normal_origins(fields[i], k, self.opts, self.step, rng)
            parts.append(
                np.column_stack(
                    [np.full(len(origins), i), origins, np.zeros(len(origins))]
                )
            )
        items = np.concatenate(parts).astype(np.int64)
        if shuffle:
            items = items[rng.permutation(len(items))]
        return items

    def _centred(
        self, fields: list[_SlideFields], n: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Up to n (slide, x0, y0, 1) tumour fields centred near tumour pixels."""
        return self._around(fields, [f.tumour_px for f in fields], n, 1, rng)

    def _around(
        self,
        fields: list[_SlideFields],
        points: list[np.ndarray],
        n: int,
        label: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Up to n (slide, x0, y0, label) fields centred within ``field_size / 8``
        of points drawn from the slides' (k, 2) level-0 ``points``; fields whose
        own label is not ``label`` are dropped."""
        owner, pool = _pooled(points)
        if n == 0 or len(pool) == 0:
            return np.zeros((0, 4))
        f = self.opts.field_size
        pick = rng.integers(0, len(pool), n)
        shift = rng.uniform(-f / 8, f / 8, (n, 2))
        origins = np.rint(pool[pick] - f / 2 + shift).astype(np.int64)
        slide_of = owner[pick]
        keep = np.zeros(n, bool)
        for i in np.unique(slide_of):
            mine = slide_of == i
            keep[mine] = _label_of(fields[i], origins[mine], self.opts) == label
        return np.column_stack([slide_of, origins, np.full(n, label)])[keep]

    def _fixed_items(self, split: str) -> np.ndarray:
        parts = [np.zeros((0, 4), np.int64)]
        n = self.opts.eval_fields_per_slide
        for i, f in enumerate(self.fields_of(split)):
            rng = np.random.default_rng([self.opts.split_seed, SPLITS.index(split), i])
            n_pos = min(n // 2, len(f.tumour)) if f.integral is not None else 0
            pos = f.tumour[rng.choice(len(f.tumour), n_pos, replace=False)]
            neg = _normal_origins(f, n - n_pos, self.opts, self.step, rng)
            rows = np.concatenate([pos, neg])
            labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            parts.append(np.column_stack([np.full(len(rows), i), rows, labels]))
        return np.concatenate(parts).astype(np.int64)

    def size(self, split: str) -> int:
        """Fields in ``split`` (train: ``samples_per_epoch``)."""
        if split == "train":
            return self.opts.samples_per_epoch
        return len(self.items(split))

    def batches(
        self,
        split: str,
        batch_size: int,
        epoch: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ) -> Iterator[tuple[SlideSensor, Tensor]]:
        """See :meth:`wsi_dram.data.tasks.Task.batches`."""
        items = self.items(split, epoch, seed)
        slides = self.split_slides(split)
        stop = len(items) - len(items) % batch_size if split == "train" else len(items)
        shard = -(-batch_size // world_size)
        for start in range(0, stop, batch_size):
            part = items[start : min(start + batch_size, stop)]
            part = part[rank * shard : (rank + 1) * shard]
            if len(part) == 0:
                continue
            caches = [slides[int(i)].cache for i in part[:, 0]]
            yield (
                self.sensor(caches, self.batch_fields(part, caches)),
                torch.from_numpy(part[:, 3]).to(device or "cpu"),
            )

    def batch_fields(self, part: np.ndarray, caches: list[CachedSlide]) -> np.ndarray:
        """(b, 3) ``(x0, y0, side)`` level-0 fields of a batch's items.

        ``part`` holds the items' rows (slide index, x0, y0, label).
        """
        side = np.full(len(part), self.opts.field_size)
        return np.column_stack([part[:, 1], part[:, 2], side])

    def sensor(self, caches: list[CachedSlide], fields: np.ndarray) -> SlideSensor:
        """A sensor over (B, 3) ``(x0, y0, side)`` level-0 fields of these slides."""
        return SlideSensor(
            caches,
            fields,
            self.spec.size,
            self.spec.scales,
            self.opts.base_level,
            self.spec.context_size,
        )

    def validate(
        self, model: Any, split: str, device: torch.device, seed: int
    ) -> dict[str, Any]:
        """Slide-level figures of ``split`` for model selection (``selection``: AUC).

        Returns:
            ``auc``, ``pixels_read_fraction``, ``n_slides`` and ``selection``
            (the AUC; the mean of correct slide calls at 0.5 when only one class
            is present).
        """
        from wsi_dram.evaluation.slides import score_split, selection_value

        scores = score_split(model, self, split, "learned", seed, device)
        return selection_value(scores)


def tissue_square(slide: CachedSlide) -> tuple[int, int, int]:
    """The square ``(x0, y0, side)`` level-0 around the slide's tissue bbox."""
    mask, d = slide.tissue_mask()
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return 0, 0, max(slide.width, slide.height)
    x0, x1 = cols.min() * d, (cols.max() + 1) * d
    y0, y1 = rows.min() * d, (rows.max() + 1) * d
    side = int(np.ceil(max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(cx - side / 2), int(cy - side / 2), side


class WholeSlideTask(RegionTask):
    """One field per slide: its tissue square; the label is the slide's."""

    def items(self, split: str, epoch: int = 0, seed: int = 0) -> np.ndarray:
        """(N, 4) ``(slide index, x0, y0, label)``; ``x0``/``y0`` unused."""
        slides = self.split_slides(split)
        labels = [s.label if s.label is not None else -1 for s in slides]
        if split != "train":
            return np.column_stack(
                [np.arange(len(slides)), np.zeros((len(slides), 2)), labels]
            ).astype(np.int64)
        rng = np.random.default_rng(epoch_seed(seed, epoch, 0, stream=12))
        n = self.opts.samples_per_epoch
        by_class = [np.flatnonzero(np.asarray(labels) == c) for c in (0, 1)]
        by_class = [c for c in by_class if len(c)]
        pick = np.concatenate(
            [rng.choice(c, n // len(by_class) + 1) for c in by_class]
        )[:n]
        pick = pick[rng.permutation(len(pick))]
        return np.column_stack(
            [pick, np.zeros((len(pick), 2)), np.asarray(labels)[pick]]
        ).astype(np.int64)

    def size(self, split: str) -> int:
        """Slides in ``split`` (train: ``samples_per_epoch`` draws)."""
        return (
            len(self.items(split)) if split != "train" else self.opts.samples_per_epoch
        )

    def batch_fields(self, part: np.ndarray, caches: list[CachedSlide]) -> np.ndarray:
        """Each item's field is its slide's tissue square."""
        return np.array([tissue_square(c) for c in caches], np.int64)


def build_region_task(config: TaskConfig, sensor: SensorSpec) -> Task:
    """``kind = "slide_regions"``."""
    return RegionTask(config, sensor)


def build_slide_task(config: TaskConfig, sensor: SensorSpec) -> Task:
    """``kind = "slide"``."""
    return WholeSlideTask(config, sensor)


register_task("slide_regions", build_region_task)
register_task("slide", build_slide_task)
