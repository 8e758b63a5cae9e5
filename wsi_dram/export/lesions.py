"""Lesion candidate CSV of a heatmap, in the Camelyon16 submission form.

One file per slide, ``<slide_id>.lesions.csv``, one candidate per line:
``confidence,X,Y`` with the confidence in [0, 1] and X, Y integer level-0
pixels, no header line (the Camelyon16 evaluation script reads every line as
numbers). The candidates are the local maxima found by
:func:`wsi_dram.evaluation.lesions.lesions_from_heatmap`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wsi_dram.export.heatmap import Heatmap

log = logging.getLogger(__name__)


def _fields(lesion: Any) -> tuple[float, int, int]:
    """``(confidence, x, y)`` of a tuple or of an object with those attributes."""
    if hasattr(lesion, "confidence"):
        return float(lesion.confidence), int(lesion.x), int(lesion.y)
    confidence, x, y = lesion
    return float(confidence), int(x), int(y)


def write_lesions_csv(path: str | Path, lesions: Iterable[Any]) -> Path:
    """Write lesion candidates as ``confidence,X,Y`` lines (no header).

    Args:
        path: Output file, normally ``<slide_id>.lesions.csv``.
        lesions: ``(confidence, x, y)`` tuples (or objects with ``confidence``,
            ``x``, ``y`` attributes), x and y in level-0 pixels; written in the
            given order, coordinates truncated to integers.

    Returns:
        The written path (written under a temporary name, then renamed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            for lesion in lesions:
                confidence, x, y = _fields(lesion)
                out.write(f"{confidence:.6f},{x},{y}\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%d lesion candidates)", path, count)
    return path


def heatmap_lesions(
    heatmap: Heatmap, threshold: float = 0.5, min_distance: int = 1
) -> list[tuple[float, int, int]]:
    """Lesion candidates of a heatmap: ``(confidence, x, y)`` level-0 px.

    Args:
        heatmap: The slide heatmap.
        threshold: Minimum probability of a candidate.
        min_distance: Suppression radius in heatmap cells.

    Returns:
        Candidates at cell centres (= field centres) clamped into the slide
        (``[0, width - 1] x [0, height - 1]``), by decreasing confidence.
    """
    from wsi_dram.evaluation.lesions import lesions_from_heatmap

    return lesions_from_heatmap(
        heatmap.probabilities,
        heatmap.cell_origin,
        heatmap.stride,
        threshold=threshold,
        min_distance=min_distance,
        size_xy=(heatmap.width, heatmap.height),
    )
