"""Score a cached slide with an attention model: a grid of fields over the tissue.

:func:`score_slide` lays square fields of side ``field_size`` (level-0 px) on a
regular grid ``stride`` px apart over the tissue bounding box, keeps those whose
tissue share is at least ``min_tissue``, runs the model on them in batches
(the policy's mean path, M = 1) and returns a :class:`SlideScores`: the tumour
probability per field as a ``(rows, cols)`` grid (NaN where no field was scored),
the grid geometry in the convention of :class:`wsi_dram.export.heatmap.Heatmap`,
the glimpse centres in level-0 px, the level-0 tissue pixels read, and the slide
score (max, or mean of the top k fields). ``whole_slide=True`` scores one field,
the square around the tissue (the slide task).

Pixels read: the distinct level-0 pixels under the finest (base-level) windows of
every glimpse, intersected with the tissue label; the coarser scales and the
context view are not counted (they see tissue only at lower magnification; the
convention of :class:`~wsi_dram.glimpse.slide.SlideSensor`).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from wsi_dram.cache.store import CachedSlide
from wsi_dram.data.tasks import epoch_seed
from wsi_dram.errors import ConfigError
from wsi_dram.glimpse.slide import SlideSensor, field_to_level0
from wsi_dram.model.dram import DRAM, Policy, evidence_glimpse

if TYPE_CHECKING:
    from wsi_dram.export.heatmap import Heatmap

log = logging.getLogger(__name__)

Aggregate = Literal["max", "topk"]


@dataclass
class ScoringOptions:
    """How a slide is cut into fields and its score formed.

    Attributes:
        field_size: Side of a field, level-0 px (ignored when ``whole_slide``).
        stride: Level-0 px between neighbouring field origins (0: field_size).
        min_tissue: Smallest share of a field covered by tissue to score it.
        aggregate: Slide score: "max" field probability or "topk" mean.
        top_k: Fields averaged by "topk" (fewer when fewer were scored).
        base_level: Finest cache level a glimpse reads.
        batch_size: Fields per model batch.
        whole_slide: One field per slide: the square around the tissue.
        lesion_merge_um: Lesion candidates closer than this (µm) are merged.
    """

    field_size: int = 2048
    stride: int = 0
    min_tissue: float = 0.05
    aggregate: Aggregate = "max"
    top_k: int = 3
    base_level: int = 0
    batch_size: int = 64
    whole_slide: bool = False
    lesion_merge_um: float = 100.0


@dataclass
class SlideScores:
    """What scoring one slide produced (everything a heatmap needs).

    Attributes:
        slide_id: The slide.
        width, height: Slide size, level-0 px.
        mpp: Level-0 µm per px.
        probabilities: (rows, cols) float32 tumour probability of field (row,
            col), NaN where no field was scored.
        origin: Level-0 ``(x, y)`` of the top-left corner of field (0, 0); field
            (row, col) starts at ``origin + (col, row) * stride``.
        stride: Level-0 px between field origins.
        field_size: Field side, level-0 px.
        fields: (N, 3) int64 ``(x0, y0, side)`` level-0 of the scored fields.
        field_probabilities: (N,) float32, the probability of each scored field.
        glimpses: (N, T, 2) float64 level-0 ``(x, y)`` centres of the glimpses.
        evidence: (N,) int64, per field the glimpse after which the tumour
            probability rose the most (-1: the model gave no per-glimpse
            output); see :func:`~wsi_dram.model.dram.evidence_glimpse`.
        glimpse_side: Level-0 side of a base-level (finest) window.
        pixels_read: Distinct level-0 tissue px under the base-level windows.
        tissue_pixels: Level-0 px of tissue (the cache's tissue label).
        score: The slide score (probability aggregate; 0 with no field).
        aggregate: "max" or "topk" (with ``top_k``).
        top_k: Fields of the "topk" mean.
        policy: The policy used ("learned", "random", "center").
    """

    slide_id: str
    width: int
    height: int
    mpp: float
    probabilities: np.ndarray
    origin: tuple[int, int]
    stride: int
    field_size: int
    fields: np.ndarray
    field_probabilities: np.ndarray
    glimpses: np.ndarray
    evidence: np.ndarray
    glimpse_side: int
    pixels_read: int
    tissue_pixels: int
    score: float
    aggregate: str
    top_k: int
    policy: str

    @property
    def pixels_read_fraction(self) -> float:
        """Level-0 tissue pixels read / tissue pixels (0 without tissue)."""
        return self.pixels_read / self.tissue_pixels if self.tissue_pixels else 0.0

    def lesion_points(self) -> np.ndarray:
        """(N, 2) float64 level-0 ``(x, y)`` where each field found its evidence:
        the centre of its evidence glimpse, or the field's centre without one."""
        points = self.fields[:, :2] + self.fields[:, 2:3] / 2.0
        rows = np.flatnonzero(self.evidence >= 0)
        points[rows] = self.glimpses[rows, self.evidence[rows]]
        return points

    def lesions(
        self, threshold: float, merge_um: float
    ) -> list[tuple[float, int, int]]:
        """Lesion candidates ``(confidence, x, y)`` level-0 px: every field at or
        above ``threshold`` at its :meth:`lesion_points` point, candidates within
        ``merge_um`` µm merged (see
        :func:`~wsi_dram.evaluation.lesions.lesions_from_points`), x and y
        clamped into the slide (``[0, width - 1] x [0, height - 1]``)."""
        from wsi_dram.evaluation.lesions import lesions_from_points

        return lesions_from_points(
            self.field_probabilities,
            self.lesion_points(),
            threshold,
            merge_um / self.mpp,
            size_xy=(self.width, self.height),
        )

    @property
    def cell_origin(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of cell (0, 0): the central ``stride`` square of a
        field (for :func:`wsi_dram.evaluation.lesions.lesions_from_heatmap`)."""
        shift = (self.field_size - self.stride) / 2.0
        return (self.origin[0] + shift, self.origin[1] + shift)

    def to_heatmap(self) -> Heatmap:
        """The :class:`~wsi_dram.export.heatmap.Heatmap` of these scores."""
        from wsi_dram.export.heatmap import Heatmap

        return Heatmap(
            probabilities=self.probabilities,
            origin=(float(self.origin[0]), float(self.origin[1])),
            stride=float(self.stride),
            field_size=float(self.field_size),
            width=self.width,
            height=self.height,
            mpp=self.mpp,
            slide_id=self.slide_id,
            score=self.score,
        )


def tissue_bbox(slide: CachedSlide) -> tuple[int, int, int, int] | None:
    """Level-0 ``(x0, y0, x1, y1)`` of the tissue label, None when empty."""
    mask, d = slide.tissue_mask()
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return (
        int(cols[0] * d),
        int(rows[0] * d),
        int(min((cols[-1] + 1) * d, slide.width)),
        int(min((rows[-1] + 1) * d, slide.height)),
    )


def field_grid(
    bbox: tuple[int, int, int, int], field_size: int, stride: int
) -> tuple[tuple[int, int], int, int]:
    """A grid of fields covering a level-0 box, centred on it.

    Returns:
        ``(origin (x, y) of field (0, 0), rows, cols)``: ``cols = 1 +
        ceil(max(0, width - field_size) / stride)`` (likewise rows), so the
        fields cover the box; the grid's span is centred on the box.
    """
    x0, y0, x1, y1 = bbox
    n = []
    origin = []
    for lo, hi in ((x0, x1), (y0, y1)):
        count = 1 + math.ceil(max(0, hi - lo - field_size) / stride)
        span = (count - 1) * stride + field_size
        n.append(count)
        origin.append(lo + (hi - lo - span) // 2)
    return (origin[0], origin[1]), n[1], n[0]


def _tissue_fraction(slide: CachedSlide, boxes: np.ndarray) -> np.ndarray:
    from wsi_dram.data.slide_tasks import _Integral

    return _Integral(*slide.tissue_mask()).fraction(boxes)


#: Side, in cells, of the bitmap that :func:`tissue_pixels_read` paints at once.
READ_BLOCK = 1024


def tissue_pixels_read(
    slide: CachedSlide, boxes: np.ndarray, block: int = READ_BLOCK
) -> int:
    """Distinct level-0 tissue px under (N, 4) ``(x0, y0, x1, y1)`` windows.

    Counted on the grid of the largest integer cell that divides every window
    edge (exact), a cell being tissue when the tissue label pixel holding its
    centre is set. The windows are painted into a bitmap of at most ``block`` x
    ``block`` cells at a time, one block of the slide after another, so memory
    grows with the number of windows, not with the cells they cover (a 100k px
    slide's fields have some 40,000 glimpse windows of 32 x 32 px).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    if len(boxes) == 0:
        return 0
    mask, d = slide.tissue_mask()
    cell = int(np.gcd.reduce(np.abs(np.r_[boxes.ravel(), 0]))) or 1
    cell = math.gcd(cell, int(d)) if d >= 1 and float(d).is_integer() else cell
    ncols, nrows = -(-slide.width // cell), -(-slide.height // cell)
    c0, c1 = np.clip(boxes[:, 0::2] // cell, 0, ncols).T  # (N,) cell columns
    r0, r1 = np.clip(boxes[:, 1::2] // cell, 0, nrows).T  # (N,) cell rows
    keep = (c1 > c0) & (r1 > r0)
    c0, c1, r0, r1 = c0[keep], c1[keep], r0[keep], r1[keep]
    in_block: dict[tuple[int, int], list[int]] = {}
    spans = np.column_stack([r0, r1 - 1, c0, c1 - 1]) // block  # (N, 4) blocks
    for i, (by0, by1, bx0, bx1) in enumerate(spans.tolist()):
        for by in range(by0, by1 + 1):
            for bx in range(bx0, bx1 + 1):
                in_block.setdefault((by, bx), []).append(i)
    count = 0
    for (by, bx), members in in_block.items():
        idx = np.asarray(members)
        # The block's windows clipped to it (cell rows and columns).
        y0 = np.maximum(r0[idx], by * block)
        y1 = np.minimum(r1[idx], (by + 1) * block)
        x0 = np.maximum(c0[idx], bx * block)
        x1 = np.minimum(c1[idx], (bx + 1) * block)
        top, left = int(y0.min()), int(x0.min())
        painted = np.zeros((int(y1.max()) - top, int(x1.max()) - left), bool)
        for a, b, c, e in zip(y0 - top, y1 - top, x0 - left, x1 - left, strict=True):
            painted[a:b, c:e] = True
        rows, cols = np.nonzero(painted)
        cy, cx = rows + top, cols + left
        r = np.minimum(((cy * cell + cell / 2) / d).astype(np.int64), mask.shape[0] - 1)
        c = np.minimum(((cx * cell + cell / 2) / d).astype(np.int64), mask.shape[1] - 1)
        count += int(mask[r, c].sum())
    return count * cell * cell


def aggregate_scores(
    probabilities: np.ndarray, aggregate: str = "max", top_k: int = 3
) -> float:
    """Slide score from field probabilities: max, or mean of the top k (NaN skipped).

    Returns 0.0 when no field was scored.
    """
    p = np.asarray(probabilities, np.float64).ravel()
    p = np.sort(p[np.isfinite(p)])[::-1]
    if len(p) == 0:
        return 0.0
    if aggregate == "max":
        return float(p[0])
    if aggregate == "topk":
        return float(p[:top_k].mean())
    raise ConfigError(f'aggregate must be "max" or "topk", got {aggregate!r}')


def score_slide(
    model: DRAM,
    slide: CachedSlide,
    options: ScoringOptions,
    policy: Policy = "learned",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> SlideScores:
    """Score every tissue field of a cached slide (see the module docstring).

    Args:
        model: A trained model (two classes, tumour = class 1); put in eval mode.
        slide: The cached slide.
        options: Grid, aggregation and batch settings.
        policy: "learned" (the policy's mean path), "random" or "center".
        seed: Seeds the random first glimpse / random policy, per slide.
        device: Where the model runs.
        progress: Called with (fields done, fields) after every batch.

    Returns:
        The slide's :class:`SlideScores`.
    """
    model.eval()
    cfg = model.config
    stride = options.stride or options.field_size
    bbox = tissue_bbox(slide)
    if options.whole_slide:
        from wsi_dram.data.slide_tasks import tissue_square

        x0, y0, side = tissue_square(slide)
        origin, rows, cols, size, stride = (x0, y0), 1, 1, side, side
        fields = np.array([[x0, y0, side]], np.int64)
        keep = np.ones(1, bool)
    else:
        size = options.field_size
        if bbox is None:
            bbox = (0, 0, slide.width, slide.height)
        origin, rows, cols = field_grid(bbox, size, stride)
        gy, gx = np.mgrid[0:rows, 0:cols]
        xs = origin[0] + gx.ravel() * stride
        ys = origin[1] + gy.ravel() * stride
        fields = np.column_stack([xs, ys, np.full(len(xs), size)]).astype(np.int64)
        boxes = np.column_stack([xs, ys, xs + size, ys + size])
        keep = _tissue_fraction(slide, boxes) >= options.min_tissue
    index = np.flatnonzero(keep)
    scored = fields[index]

    gen = torch.Generator().manual_seed(
        epoch_seed(seed, zlib.crc32(slide.slide_id.encode()), 0, stream=7)
    )
    probs = np.zeros(len(scored), np.float32)
    glimpses = np.zeros((len(scored), cfg.glimpses, 2), np.float64)
    evidence = np.full(len(scored), -1, np.int64)
    windows: list[np.ndarray] = []
    for start in range(0, len(scored), options.batch_size):
        part = scored[start : start + options.batch_size]
        sensor = SlideSensor(
            slide, part, cfg.glimpse_size, cfg.scales, options.base_level,
            cfg.context_size,
        )  # fmt: skip
        with torch.no_grad():  # the policy's mean path (M = 1)
            out = model(sensor, sample=False, policy=policy, generator=gen)
        locations = out.locations
        probs[start : start + len(part)] = (
            torch.softmax(out.logits, dim=1)[:, 1].cpu().numpy()
        )
        evidence[start : start + len(part)] = evidence_glimpse(out).cpu().numpy()
        for t in range(locations.shape[1]):
            glimpses[start : start + len(part), t] = field_to_level0(
                locations[:, t].cpu().numpy(), part
            )
        windows.append(sensor.glimpse_boxes()[:, :, 0].reshape(-1, 4))
        if progress is not None:
            progress(start + len(part), len(scored))

    grid = np.full(rows * cols, np.nan, np.float32)
    grid[index] = probs
    mask, d = slide.tissue_mask()
    all_windows = np.concatenate(windows) if windows else np.zeros((0, 4), np.int64)
    return SlideScores(
        slide_id=slide.slide_id,
        width=slide.width,
        height=slide.height,
        mpp=slide.mpp,
        probabilities=grid.reshape(rows, cols),
        origin=(int(origin[0]), int(origin[1])),
        stride=int(stride),
        field_size=int(size),
        fields=scored,
        field_probabilities=probs,
        glimpses=glimpses,
        evidence=evidence,
        glimpse_side=int(cfg.glimpse_size * 2**options.base_level),
        pixels_read=tissue_pixels_read(slide, all_windows),
        tissue_pixels=int(round(float(mask.sum()) * d * d)),
        score=aggregate_scores(probs, options.aggregate, options.top_k),
        aggregate=options.aggregate,
        top_k=options.top_k,
        policy=policy,
    )


def options_from_task(opts: Any, whole_slide: bool = False) -> ScoringOptions:
    """:class:`ScoringOptions` from a slide task's ``[task.options]``."""
    return ScoringOptions(
        field_size=opts.field_size,
        stride=opts.score_stride,
        min_tissue=opts.score_min_tissue,
        aggregate=opts.aggregate,
        top_k=opts.top_k,
        base_level=opts.base_level,
        batch_size=opts.eval_batch_size,
        whole_slide=whole_slide,
        lesion_merge_um=opts.lesion_merge_um,
    )


def options_from_config(config: Any) -> ScoringOptions:
    """:class:`ScoringOptions` of a checkpoint's ``TrainConfig`` (slide tasks).

    For the heatmap command: ``score_slide(model, open_cache(path),
    options_from_config(cfg))`` with ``model, cfg, _ = load_model(checkpoint)``.

    Raises:
        ConfigError: The config is not a slide task's.
    """
    from wsi_dram.data.slide_tasks import read_options

    if config.task.kind not in ("slide_regions", "slide"):
        raise ConfigError(
            f"task.kind {config.task.kind!r} is not a slide task (slide_regions, slide)"
        )
    return options_from_task(read_options(config.task), config.task.kind == "slide")
