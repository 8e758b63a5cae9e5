"""Quality-control picture of a cached slide: thumbnail + tissue outline + annotations.

Green: tissue outline (exteriors solid, holes dashed). Red: tumour annotation
exteriors. Blue: holes of the tumour geometry (e.g. ASAP ``_2`` exclusions).
Orange, dashed: annotated regions of other labels (exclusion groups outside any
tumour, other QuPath classes), named in the legend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def _polygons(geometry: Any) -> list[Any]:
    if geometry is None or geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    out = []
    for sub in getattr(geometry, "geoms", []):
        out.extend(_polygons(sub))
    return out


def write_qc_png(
    path: str | Path,
    thumbnail: np.ndarray,
    downsample: float,
    tissue: Any,
    tumor: Any = None,
    title: str = "",
    others: dict[str, Any] | None = None,
) -> Path:
    """Draw outlines over a thumbnail and save it as PNG (temporary name, renamed).

    Args:
        path: Output ``.png`` path.
        thumbnail: RGB (h, w, 3) uint8.
        downsample: Level-0 pixels per thumbnail pixel.
        tissue: Tissue geometry (shapely, level-0 px) or None.
        tumor: Tumour geometry (shapely, level-0 px) or None.
        title: Text drawn at the top left.
        others: Other annotated regions by label (shapely, level-0 px).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = thumbnail.shape[:2]
    dpi = 100
    fig = Figure(figsize=(max(w, 64) / dpi, max(h, 64) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(thumbnail, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")

    def draw(ring: Any, colour: str, style: str = "-") -> None:
        xy = np.asarray(ring.coords, dtype=np.float64) / downsample - 0.5
        ax.plot(xy[:, 0], xy[:, 1], style, color=colour, linewidth=1.2)

    for poly in _polygons(tissue):
        draw(poly.exterior, "#00c000")
        for ring in poly.interiors:
            draw(ring, "#00c000", "--")
    for poly in _polygons(tumor):
        draw(poly.exterior, "#e00000")
        for ring in poly.interiors:
            draw(ring, "#0050ff")
    for geometry in (others or {}).values():
        for poly in _polygons(geometry):
            draw(poly.exterior, "#ff8c00", "--")
    if others:
        title = f"{title}  (orange: {', '.join(sorted(others))})".strip()
    if title:
        ax.text(
            4,
            12,
            title,
            color="black",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0},
        )
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return path
