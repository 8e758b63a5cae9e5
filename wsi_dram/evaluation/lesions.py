"""Lesion candidates (from a heatmap, or from where the glimpses found tumour), and
the organisers' detection CSV.

A lesion CSV (one per slide, Camelyon16 submission form) has one detection per
line, ``confidence,X,Y``, with X, Y integer level-0 pixels and no header.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsi_dram.errors import DataError
from wsi_dram.evaluation.froc import Detection


def lesions_from_heatmap(
    prob: np.ndarray,
    origin_xy: tuple[float, float],
    stride: float,
    threshold: float = 0.5,
    min_distance: int = 1,
    size_xy: tuple[int, int] | None = None,
) -> list[tuple[float, int, int]]:
    """Local maxima of a tumour-probability heatmap as lesion candidates.

    A cell is a candidate when its probability is at least ``threshold`` and
    the largest within the ``(2 * min_distance + 1)`` square around it. Among
    candidates, by decreasing probability (ties: row, then column), a candidate
    is kept unless a kept one lies within ``min_distance`` cells (Chebyshev
    distance). Every connected region above the threshold therefore yields at
    least its maximum, unless a stronger peak lies within ``min_distance``.

    Args:
        prob: ``(rows, cols)`` probabilities; NaN cells (not scored) are ignored.
        origin_xy: Level-0 ``(x, y)`` of the top-left corner of cell (0, 0).
        stride: Level-0 px between cells; cell (r, c) covers
            ``[x0 + c * stride, x0 + (c + 1) * stride)`` and likewise in y.
        threshold: Minimum probability of a candidate.
        min_distance: Suppression radius in heatmap cells (>= 0; 0 keeps every
            cell at or above the threshold).
        size_xy: The slide's level-0 ``(width, height)``; when given, x and y
            are clamped into ``[0, width - 1] x [0, height - 1]`` (a cell centre
            beyond the slide's edge becomes the nearest pixel of the slide).

    Returns:
        ``(confidence, x, y)`` with x, y the integer level-0 pixel at the centre
        of the cell (floor), by decreasing confidence.
    """
    if prob.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (rows, cols), got shape {prob.shape}")
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    if not stride > 0:
        raise ValueError(f"stride must be positive, got {stride}")
    values = np.where(np.isnan(prob), -np.inf, prob).astype(np.float64)
    size = 2 * min_distance + 1
    local_max = ndimage.maximum_filter(values, size=size, mode="constant", cval=-np.inf)
    rows, cols = np.nonzero((values >= threshold) & (values == local_max))

    order = np.lexsort((cols, rows, -values[rows, cols]))
    # Greedy suppression: a kept peak blocks its (2 * min_distance + 1) square.
    blocked = np.zeros(values.shape, dtype=bool)
    kept: list[tuple[int, int]] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if blocked[r, c]:
            continue
        kept.append((r, c))
        if min_distance > 0:
            r0, c0 = max(r - min_distance, 0), max(c - min_distance, 0)
            blocked[r0 : r + min_distance + 1, c0 : c + min_distance + 1] = True

    x0, y0 = origin_xy
    return [
        _inside(
            float(values[r, c]),
            int(math.floor(x0 + (c + 0.5) * stride)),
            int(math.floor(y0 + (r + 0.5) * stride)),
            size_xy,
        )
        for r, c in kept
    ]


def _inside(
    confidence: float, x: int, y: int, size_xy: tuple[int, int] | None
) -> tuple[float, int, int]:
    """``(confidence, x, y)`` with x, y clamped into the slide (if its size is
    given): ``[0, width - 1] x [0, height - 1]`` level-0 px."""
    if size_xy is not None:
        x = min(max(x, 0), int(size_xy[0]) - 1)
        y = min(max(y, 0), int(size_xy[1]) - 1)
    return confidence, x, y


def lesions_from_points(
    confidence: np.ndarray,
    points_xy: np.ndarray,
    threshold: float = 0.5,
    radius: float = 0.0,
    size_xy: tuple[int, int] | None = None,
) -> list[tuple[float, int, int]]:
    """Lesion candidates from per-field confidences placed at level-0 points.

    A field at or above ``threshold`` is a candidate at its point (where its
    glimpses found the evidence, see
    :meth:`~wsi_dram.evaluation.scoring.SlideScores.lesion_points`). By
    decreasing confidence (ties: input order), a candidate is kept unless a kept
    one lies within ``radius`` level-0 px (Euclidean): overlapping fields that
    saw the same spot give one detection.

    Args:
        confidence: (N,) probabilities.
        points_xy: (N, 2) level-0 ``(x, y)``.
        threshold: Minimum confidence of a candidate.
        radius: Merge distance in level-0 px (>= 0; 0 keeps every candidate).
        size_xy: The slide's level-0 ``(width, height)``; when given, x and y
            are clamped into ``[0, width - 1] x [0, height - 1]`` (a field or
            glimpse centre beyond the slide's edge becomes the nearest pixel of
            the slide). Merging uses the unclamped points.

    Returns:
        ``(confidence, x, y)`` with x, y floored to integer level-0 px, by
        decreasing confidence.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if confidence.shape != (len(points),):
        raise ValueError(
            f"{confidence.shape} confidences for {len(points)} points; need one each"
        )
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    index = np.flatnonzero(confidence >= threshold)
    order = index[np.argsort(-confidence[index], kind="stable")]
    kept: list[int] = []
    for i in order:
        if kept and radius > 0:
            d = np.hypot(*(points[kept] - points[i]).T)
            if float(d.min()) <= radius:
                continue
        kept.append(int(i))
    return [
        _inside(
            float(confidence[i]),
            int(math.floor(points[i, 0])),
            int(math.floor(points[i, 1])),
            size_xy,
        )
        for i in kept
    ]


def write_detections_csv(path: Path, detections: Sequence[Detection]) -> Path:
    """Write ``confidence,X,Y`` lines (no header, X and Y as integer level-0 px).

    Written to a temporary name and renamed into place.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for confidence, x, y in detections:
            writer.writerow([repr(float(confidence)), int(x), int(y)])
    os.replace(tmp, path)
    return path


def read_detections_csv(path: Path) -> list[Detection]:
    """Read a lesion CSV ``confidence,X,Y`` (level-0 px).

    A first line whose fields are not numbers is taken as a header; blank lines
    are skipped; extra columns are ignored.

    Raises:
        DataError: The file is missing, or a line has fewer than three fields
            or a non-numeric field (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("detection CSV not found", path)
    detections: list[Detection] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            try:
                if len(row) < 3:
                    raise ValueError("fewer than 3 fields")
                confidence, x, y = (float(cell) for cell in row[:3])
            except ValueError as exc:
                if line_no == 1 and not _is_number(row[0]):
                    continue
                raise DataError(
                    f"line {line_no}: expected 'confidence,X,Y' numbers, got "
                    f"{','.join(row)!r} ({exc})",
                    path,
                ) from exc
            detections.append((confidence, x, y))
    return detections


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
