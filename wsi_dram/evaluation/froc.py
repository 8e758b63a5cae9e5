"""Lesion-level FROC, ported from the Camelyon16 organisers' evaluation protocol.

The protocol (Ehteshami Bejnordi et al., JAMA 2017; the organisers' published
evaluation script, re-implemented here from its description):

1. Reference mask at the evaluation level (level 5, 32 level-0 px per pixel).
2. Evaluation mask: every pixel whose Euclidean distance to the nearest tumour
   pixel is *below* ``75 / (mpp * 2**level * 2)`` evaluation pixels is added
   (75 µm is about five tumour cells; the ``* 2`` makes it 37.5 µm on each side,
   75 µm across), holes are filled, and 8-connected components are the lesions.
3. Isolated tumour cells (ITC): lesions whose major axis (skimage
   ``axis_major_length`` of the grown region) is below ``275 / (mpp * 2**level)``
   evaluation pixels (200 µm plus the 75 µm of growth). A detection in an ITC
   is neither a true nor a false positive.
4. A detection ``(confidence, x, y)`` (level-0 px) falls in evaluation pixel
   ``(int(y / 2**level), int(x / 2**level))``. Outside every lesion it is a
   false positive; inside a lesion it is that lesion's hit, and only the
   highest-confidence hit per lesion counts (strictly greater replaces). On a
   normal slide every detection is a false positive.
5. FROC curve: thresholds are the distinct confidences of all false positives
   and all per-lesion hit values (0 for a missed lesion or an ITC) except the
   smallest; at each, false positives at or above it are averaged over all
   slides and hits at or above it are divided by the number of non-ITC
   lesions; the point (0, 0) closes the curve.
6. Sensitivities are read at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide
   by linear interpolation along the curve ordered by increasing false
   positives (at a repeated x the last, highest point; beyond the ends the end
   values) and averaged: that mean is the FROC score.

Two places where the script would fail and this port decides: a detection
outside the evaluation mask is a false positive; a cohort with no non-ITC
lesion has an undefined sensitivity (NaN, logged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage
from skimage import measure

from wsi_dram.errors import DataError

log = logging.getLogger(__name__)

CAMELYON16_MPP = 0.243
"""Level-0 resolution of the Camelyon16 reference masks, µm per pixel."""
EVALUATION_LEVEL = 5
"""Pyramid level (factor 2**5 = 32) at which the organisers score lesions."""
FROC_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Average false positives per slide at which sensitivity is read."""
GROWTH_UM = 75.0
ITC_AXIS_UM = 275.0

Detection = tuple[float, float, float]
"""``(confidence, x, y)`` with x, y in level-0 pixels."""


def growth_threshold_px(mpp: float, level: int) -> float:
    """Distance (evaluation pixels) below which a pixel joins a lesion.

    ``75 / (mpp * 2**level * 2)``: 4.82 px for Camelyon16 at level 5.
    """
    return GROWTH_UM / (mpp * 2**level * 2)


def itc_threshold_px(mpp: float, level: int) -> float:
    """Major axis (evaluation pixels) below which a lesion is an ITC.

    ``275 / (mpp * 2**level)``: 35.36 px for Camelyon16 at level 5.
    """
    return ITC_AXIS_UM / (mpp * 2**level)


@dataclass(frozen=True)
class EvaluationMask:
    """Lesion labels of one tumour slide at the evaluation level.

    Attributes:
        labels: ``(rows, cols)`` int32, 0 outside lesions, lesions ``1..n``;
            pixel (r, c) covers level-0 ``[c * 2**level, (c + 1) * 2**level)``
            in x and the same in y.
        itc_labels: Labels of the isolated-tumour-cell lesions.
        level: Evaluation level (factor ``2**level`` from level 0).
        mpp: Level-0 µm per pixel used for the thresholds.
    """

    labels: np.ndarray
    itc_labels: frozenset[int]
    level: int = EVALUATION_LEVEL
    mpp: float = CAMELYON16_MPP

    @property
    def max_label(self) -> int:
        """Number of lesions, ITC included."""
        return int(self.labels.max()) if self.labels.size else 0

    @property
    def n_lesions(self) -> int:
        """Number of lesions that count for sensitivity (ITC excluded)."""
        return self.max_label - len(self.itc_labels)

    def label_at(self, x: float, y: float) -> int:
        """Lesion label under the level-0 point ``(x, y)``; 0 outside the mask."""
        scale = 2**self.level
        row, col = int(y / scale), int(x / scale)
        rows, cols = self.labels.shape
        if y < 0 or x < 0 or row >= rows or col >= cols:
            return 0
        return int(self.labels[row, col])


def evaluation_mask(
    tumor_mask: np.ndarray,
    mpp: float = CAMELYON16_MPP,
    level: int = EVALUATION_LEVEL,
) -> EvaluationMask:
    """Grow, fill and label a reference tumour mask given at the evaluation level.

    Args:
        tumor_mask: ``(rows, cols)`` mask at ``level``; nonzero is tumour (for
            the organisers' 0/255 mask TIFFs pass ``mask == 255``).
        mpp: Level-0 resolution in µm per pixel (0.243 for Camelyon16).
        level: Evaluation level; the mask pixel is ``2**level`` level-0 px.

    Returns:
        The labelled evaluation mask with its ITC labels.
    """
    if tumor_mask.ndim != 2:
        raise ValueError(
            f"tumour mask must be 2-D (rows, cols), got {tumor_mask.shape}"
        )
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    tumour = np.asarray(tumor_mask) != 0
    if not tumour.any():
        empty = np.zeros(tumour.shape, dtype=np.int32)
        return EvaluationMask(empty, frozenset(), level, mpp)

    # Only pixels nearer than the growth distance to tumour join a lesion, so
    # grow, fill and label in the tumour's bounding box widened past that
    # distance: its rim is background like everything outside it, so holes,
    # lesions and their numbering are those of the whole mask, in the memory of
    # the box (a distance transform of a 100k px slide's mask took 326 MB).
    margin = math.ceil(growth_threshold_px(mpp, level)) + 2
    rows, cols = np.flatnonzero(tumour.any(1)), np.flatnonzero(tumour.any(0))
    box = (
        slice(max(rows[0] - margin, 0), rows[-1] + 1 + margin),
        slice(max(cols[0] - margin, 0), cols[-1] + 1 + margin),
    )
    # Distance of every pixel to the nearest tumour pixel (0 on tumour).
    distance = ndimage.distance_transform_edt(~tumour[box])
    grown = distance < growth_threshold_px(mpp, level)
    filled = ndimage.binary_fill_holes(grown)
    lesions = measure.label(filled, connectivity=2).astype(np.int32)
    labels = np.zeros(tumour.shape, np.int32)
    labels[box] = lesions

    limit = itc_threshold_px(mpp, level)
    itc = frozenset(
        int(region.label)
        for region in measure.regionprops(lesions)
        if region.axis_major_length < limit
    )
    return EvaluationMask(labels, itc, level, mpp)


def rasterize_geometry(
    geometry: shapely.Geometry | None,
    slide_size: tuple[int, int],
    level: int = EVALUATION_LEVEL,
) -> np.ndarray:
    """Rasterise a level-0 geometry onto the grid of pyramid level ``level``.

    A pixel is set when its centre, ``((c + 0.5) * 2**level, (r + 0.5) *
    2**level)`` in level-0 px, lies inside or on the geometry (holes honoured).

    Args:
        geometry: Shapely (Multi)Polygon in level-0 px, or None / empty.
        slide_size: ``(width, height)`` of the slide in level-0 px.
        level: Target level; the grid is ``ceil(h / 2**level)`` by
            ``ceil(w / 2**level)`` so every level-0 pixel maps into it.

    Returns:
        Bool ``(rows, cols)`` mask.
    """
    width, height = slide_size
    scale = 2**level
    shape = (math.ceil(height / scale), math.ceil(width / scale))
    mask = np.zeros(shape, dtype=bool)
    if geometry is None or geometry.is_empty:
        return mask
    parts = getattr(geometry, "geoms", [geometry])
    for part in parts:
        if part.is_empty:
            continue
        x0, y0, x1, y1 = part.bounds
        c0, c1 = max(int(x0 // scale) - 1, 0), min(int(x1 // scale) + 2, shape[1])
        r0, r1 = max(int(y0 // scale) - 1, 0), min(int(y1 // scale) + 2, shape[0])
        if c0 >= c1 or r0 >= r1:
            continue
        cols = (np.arange(c0, c1) + 0.5) * scale
        rows = (np.arange(r0, r1) + 0.5) * scale
        xs, ys = np.meshgrid(cols, rows)  # (r1 - r0, c1 - c0)
        shapely.prepare(part)
        mask[r0:r1, c0:c1] |= shapely.intersects_xy(part, xs, ys)
    return mask


def evaluation_mask_from_geometry(
    geometry: shapely.Geometry | None,
    slide_size: tuple[int, int],
    mpp: float = CAMELYON16_MPP,
    level: int = EVALUATION_LEVEL,
) -> EvaluationMask:
    """Evaluation mask from tumour geometry in level-0 px (synthetic or XML).

    Args:
        geometry: Tumour (Multi)Polygon in level-0 px (an
            ``AnnotationSet.tumor``), exclusions already subtracted.
        slide_size: ``(width, height)`` in level-0 px.
        mpp: Level-0 µm per pixel of the slide.
        level: Evaluation level.
    """
    return evaluation_mask(rasterize_geometry(geometry, slide_size, level), mpp, level)


@dataclass(frozen=True)
class SlideLesions:
    """Scoring of one slide's detections.

    Attributes:
        slide_id: The slide.
        fp_confidences: ``(n_fp,)`` confidences of the false positives.
        lesion_confidences: ``(max_label,)`` best hit per lesion label
            (index ``label - 1``); 0 for a missed lesion or an ITC.
        n_lesions: Non-ITC lesions on the slide.
        hits: Best detection per hit non-ITC lesion label.
        n_itc_hits: Detections that fell in an ITC (counted neither way).
    """

    slide_id: str
    fp_confidences: np.ndarray
    lesion_confidences: np.ndarray
    n_lesions: int
    hits: dict[int, Detection] = field(default_factory=dict)
    n_itc_hits: int = 0


def score_slide(
    detections: Sequence[Detection],
    mask: EvaluationMask | None,
    slide_id: str = "",
) -> SlideLesions:
    """Split one slide's detections into lesion hits and false positives.

    Args:
        detections: ``(confidence, x, y)``, level-0 px, confidence >= 0.
        mask: The slide's evaluation mask, or None for a normal slide (all
            detections are then false positives).
        slide_id: Used in messages and kept in the result.
    """
    for confidence, _, _ in detections:
        if not (math.isfinite(confidence) and confidence >= 0):
            raise DataError(
                f"slide {slide_id!r}: detection confidence {confidence!r} is not a "
                "finite number >= 0 (the FROC thresholds assume probabilities)"
            )
    if mask is None:
        fps = np.array([d[0] for d in detections], dtype=np.float64)
        return SlideLesions(slide_id, fps, np.zeros(0), 0)

    best = np.zeros(mask.max_label, dtype=np.float64)
    hits: dict[int, Detection] = {}
    false_positives: list[float] = []
    itc_hits = 0
    for detection in detections:
        confidence, x, y = detection
        label = mask.label_at(x, y)
        if label == 0:
            false_positives.append(confidence)
        elif label in mask.itc_labels:
            itc_hits += 1
        elif confidence > best[label - 1]:
            best[label - 1] = confidence
            hits[label] = detection
    return SlideLesions(
        slide_id,
        np.asarray(false_positives, dtype=np.float64),
        best,
        mask.n_lesions,
        hits,
        itc_hits,
    )


def froc_curve(results: Sequence[SlideLesions]) -> tuple[np.ndarray, np.ndarray]:
    """FROC points over a cohort, in the organisers' order.

    Args:
        results: One :class:`SlideLesions` per evaluated slide (normal slides
            included: they count in the per-slide average).

    Returns:
        ``(fps_per_slide, sensitivity)``, both ``(n_thresholds + 1,)``, by
        increasing threshold (so decreasing false positives), ending at (0, 0).
        Sensitivity is NaN when the cohort has no non-ITC lesion.
    """
    if not results:
        raise DataError("FROC needs at least one slide")
    fp = np.sort(np.concatenate([r.fp_confidences for r in results]))
    tp = np.sort(np.concatenate([r.lesion_confidences for r in results]))
    thresholds = np.unique(np.concatenate([fp, tp]))[1:]

    # Counts of values >= t, from sorted arrays.
    fp_counts = len(fp) - np.searchsorted(fp, thresholds, side="left")
    tp_counts = len(tp) - np.searchsorted(tp, thresholds, side="left")
    fp_counts = np.append(fp_counts, 0).astype(np.float64)
    tp_counts = np.append(tp_counts, 0).astype(np.float64)

    n_lesions = sum(r.n_lesions for r in results)
    fps_per_slide = fp_counts / len(results)
    if n_lesions == 0:
        log.warning(
            "no non-ITC lesion in %d slides: sensitivity undefined", len(results)
        )
        return fps_per_slide, np.full_like(tp_counts, np.nan)
    return fps_per_slide, tp_counts / n_lesions


def sensitivity_at(
    fps_per_slide: np.ndarray,
    sensitivity: np.ndarray,
    rates: Sequence[float] = FROC_RATES,
) -> np.ndarray:
    """Read the curve at the given false-positive rates, as the organisers do.

    The curve from :func:`froc_curve` is reversed to increasing false
    positives; between two points the sensitivity is linear, at an x shared by
    several points the last (highest) one is taken, and outside the curve the
    end values hold (``numpy.interp`` on the reversed arrays behaves so).

    Returns:
        ``(len(rates),)`` sensitivities.
    """
    xs = np.asarray(fps_per_slide, dtype=np.float64)[::-1]
    ys = np.asarray(sensitivity, dtype=np.float64)[::-1]
    out = np.empty(len(rates), dtype=np.float64)
    for i, rate in enumerate(rates):
        if rate <= xs[0]:
            j = int(np.searchsorted(xs, rate, side="right")) - 1
            out[i] = ys[max(j, 0)]
        elif rate >= xs[-1]:
            out[i] = ys[-1]
        else:
            j = int(np.searchsorted(xs, rate, side="right")) - 1
            if xs[j] == rate:
                out[i] = ys[j]
            else:
                t = (rate - xs[j]) / (xs[j + 1] - xs[j])
                out[i] = ys[j] + t * (ys[j + 1] - ys[j])
    return out


@dataclass(frozen=True)
class FrocResult:
    """A cohort's lesion-level result.

    Attributes:
        froc: Mean sensitivity over ``rates`` (NaN without lesions).
        sensitivities: Rate (FP per slide) -> sensitivity.
        fps_per_slide, sensitivity: The curve (see :func:`froc_curve`).
        n_slides, n_lesions, n_false_positives: Counts over the cohort.
        per_slide: The scoring of every slide.
    """

    froc: float
    sensitivities: dict[float, float]
    fps_per_slide: np.ndarray
    sensitivity: np.ndarray
    n_slides: int
    n_lesions: int
    n_false_positives: int
    per_slide: list[SlideLesions]


def evaluate_froc(
    detections: Mapping[str, Sequence[Detection]],
    masks: Mapping[str, EvaluationMask | None],
    rates: Sequence[float] = FROC_RATES,
) -> FrocResult:
    """Score a cohort's detections against its evaluation masks.

    Args:
        detections: slide_id -> ``(confidence, x, y)`` detections (level-0 px).
            A slide of ``masks`` absent here had no detection.
        masks: slide_id -> evaluation mask, None for a normal slide. These keys
            are the evaluated slides (leave excluded slides out).
        rates: False positives per slide at which sensitivity is read.

    Raises:
        DataError: Detections for a slide that has no reference entry, or no
            slide at all.
    """
    unknown = sorted(set(detections) - set(masks))
    if unknown:
        raise DataError(
            f"detections for {len(unknown)} slide(s) without a reference mask entry: "
            + ", ".join(unknown[:5])
        )
    per_slide = [
        score_slide(list(detections.get(slide_id, ())), mask, slide_id)
        for slide_id, mask in sorted(masks.items())
    ]
    fps, sens = froc_curve(per_slide)
    values = sensitivity_at(fps, sens, rates)
    return FrocResult(
        froc=float(np.mean(values)),
        sensitivities={float(r): float(v) for r, v in zip(rates, values, strict=True)},
        fps_per_slide=fps,
        sensitivity=sens,
        n_slides=len(per_slide),
        n_lesions=sum(r.n_lesions for r in per_slide),
        n_false_positives=sum(len(r.fp_confidences) for r in per_slide),
        per_slide=per_slide,
    )
