"""The slide heatmap: a small grid of tumour probabilities placed on level 0.

A :class:`Heatmap` is what scoring a slide field by field produces: one
probability per field, on a regular grid of field origins ``stride`` level-0
pixels apart. Every writer in :mod:`wsi_dram.export` reads this one object, so
they all agree on where a cell lies on the slide.

Geometry of the grid (all level-0 pixels, ``(x, y)``):

- field ``(row, col)`` has its top-left at
  ``(origin_x + col * stride, origin_y + row * stride)`` and side ``field_size``;
- its *cell* (the part of the slide the field's score stands for) is the square
  of side ``stride`` centred on the field centre. Cells tile the plane without
  overlap even when fields overlap (``field_size > stride``) or leave gaps
  (``field_size < stride``); all drawings, polygons and rasters use cells.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import shapely
from matplotlib import colormaps
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box

from wsi_dram.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_CMAP = "viridis"


@dataclass
class Heatmap:
    """Tumour probabilities of one slide on a regular grid of fields.

    Attributes:
        probabilities: (rows, cols) float32 in [0, 1]; NaN where a field was
            not scored (background, outside the tissue).
        origin: ``(x, y)`` level-0 pixels of the top-left of field (0, 0).
        stride: Level-0 pixels between the origins of neighbouring fields.
        field_size: Side of one field in level-0 pixels.
        width: Slide width in level-0 pixels.
        height: Slide height in level-0 pixels.
        mpp: Micrometres per level-0 pixel.
        slide_id: Slide identifier (file stem), used in file names and titles.
        score: Slide-level tumour score in [0, 1], or None when not computed.
    """

    probabilities: np.ndarray
    origin: tuple[float, float]
    stride: float
    field_size: float
    width: int
    height: int
    mpp: float
    slide_id: str
    score: float | None = None

    def __post_init__(self) -> None:
        probs = np.asarray(self.probabilities, dtype=np.float32)
        if probs.ndim != 2:
            raise DataError(
                f"heatmap of {self.slide_id!r} must be 2-D (rows, cols), "
                f"got shape {probs.shape}"
            )
        if not self.stride > 0 or not self.field_size > 0:
            raise DataError(
                f"heatmap of {self.slide_id!r} needs stride > 0 and field_size > 0 "
                f"(got {self.stride}, {self.field_size})"
            )
        if self.width <= 0 or self.height <= 0 or not self.mpp > 0:
            raise DataError(
                f"heatmap of {self.slide_id!r} needs a positive slide size and mpp "
                f"(got {self.width}x{self.height}, mpp {self.mpp})"
            )
        finite = probs[np.isfinite(probs)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise DataError(
                f"heatmap of {self.slide_id!r} has probabilities outside [0, 1] "
                f"({finite.min():.3g}..{finite.max():.3g})"
            )
        self.probabilities = probs
        self.origin = (float(self.origin[0]), float(self.origin[1]))

    @property
    def rows(self) -> int:
        """Number of grid rows (y direction)."""
        return int(self.probabilities.shape[0])

    @property
    def cols(self) -> int:
        """Number of grid columns (x direction)."""
        return int(self.probabilities.shape[1])

    @property
    def cell_origin(self) -> tuple[float, float]:
        """``(x, y)`` level-0 pixels of the top-left corner of cell (0, 0)."""
        shift = (self.field_size - self.stride) / 2.0
        return (self.origin[0] + shift, self.origin[1] + shift)

    def field_centres(self) -> np.ndarray:
        """Level-0 ``(x, y)`` centres of all fields, shape (rows, cols, 2)."""
        cols = self.origin[0] + self.field_size / 2 + self.stride * np.arange(self.cols)
        rows = self.origin[1] + self.field_size / 2 + self.stride * np.arange(self.rows)
        grid_x, grid_y = np.meshgrid(cols, rows)
        return np.stack([grid_x, grid_y], axis=-1)

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Cell ``(row, col)`` as ``(x0, y0, x1, y1)`` level-0 pixels, clipped."""
        cx, cy = self.cell_origin
        x0 = max(0.0, cx + col * self.stride)
        y0 = max(0.0, cy + row * self.stride)
        x1 = min(float(self.width), cx + (col + 1) * self.stride)
        y1 = min(float(self.height), cy + (row + 1) * self.stride)
        return (x0, y0, x1, y1)


def sample_grid(heatmap: Heatmap, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Nearest-cell probabilities at the level-0 points ``xs`` x ``ys``.

    Args:
        heatmap: The heatmap to sample.
        xs: (W,) level-0 x coordinates (e.g. pixel centres of one raster row).
        ys: (H,) level-0 y coordinates.

    Returns:
        (H, W) float32 probabilities; NaN outside the grid or where not scored.
    """
    cx, cy = heatmap.cell_origin
    col = np.floor((np.asarray(xs, dtype=np.float64) - cx) / heatmap.stride)
    row = np.floor((np.asarray(ys, dtype=np.float64) - cy) / heatmap.stride)
    col_ok = (col >= 0) & (col < heatmap.cols)
    row_ok = (row >= 0) & (row < heatmap.rows)
    col_i = np.where(col_ok, col, 0).astype(np.intp)
    row_i = np.where(row_ok, row, 0).astype(np.intp)
    out = heatmap.probabilities[np.ix_(row_i, col_i)]  # (H, W)
    return np.where(row_ok[:, None] & col_ok[None, :], out, np.float32(np.nan))


def sample_raster(
    heatmap: Heatmap, x: float, y: float, w: int, h: int, downsample: float
) -> np.ndarray:
    """Probabilities of a raster at ``downsample`` level-0 px per pixel.

    Pixel ``(i, j)`` (column i, row j) of the raster covers level-0
    ``[(x + i) * d, (x + i + 1) * d)`` horizontally; it takes the cell under
    its centre.

    Args:
        heatmap: The heatmap to sample.
        x: Raster-pixel x of the region's left edge (in the raster's frame).
        y: Raster-pixel y of the region's top edge.
        w: Region width in raster pixels.
        h: Region height in raster pixels.
        downsample: Level-0 pixels per raster pixel.

    Returns:
        (h, w) float32 probabilities, NaN where not scored.
    """
    xs = (x + np.arange(w) + 0.5) * downsample
    ys = (y + np.arange(h) + 0.5) * downsample
    return sample_grid(heatmap, xs, ys)


def colour_lut(cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """(256, 3) uint8 RGB of the colour map at probabilities ``i / 255``."""
    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))  # (256, 4) float
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def colourize(
    probabilities: np.ndarray,
    cmap: str = DEFAULT_CMAP,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Colour-map probabilities to RGB; NaN becomes ``background``.

    Args:
        probabilities: (H, W) float in [0, 1] with NaN where not scored.
        cmap: A matplotlib colour map name.
        background: RGB for NaN pixels.

    Returns:
        (H, W, 3) uint8.
    """
    lut = np.vstack([colour_lut(cmap), np.asarray(background, np.uint8)[None]])
    scored = np.isfinite(probabilities)
    index = np.where(scored, np.round(np.nan_to_num(probabilities) * 255), 256)
    return lut[index.astype(np.intp)]


class RasterColours:
    """Fast nearest-cell colour rasters of a heatmap (for tiles and thumbnails).

    The probabilities are quantised once to colour-table indices on a grid
    padded with a one-cell "not scored" border, so a raster of any size is two
    index computations and two gathers, with no per-pixel float work.

    Args:
        heatmap: The heatmap to draw.
        cmap: Matplotlib colour map name.
        background: RGB of pixels that are not scored or off the grid.
    """

    def __init__(
        self,
        heatmap: Heatmap,
        cmap: str = DEFAULT_CMAP,
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        self.heatmap = heatmap
        self.lut = np.vstack([colour_lut(cmap), np.asarray(background, np.uint8)[None]])
        probs = heatmap.probabilities
        index = np.where(
            np.isfinite(probs), np.round(np.nan_to_num(probs) * 255), 256
        ).astype(np.uint16)
        self.index = np.pad(index, 1, constant_values=256)  # (rows + 2, cols + 2)

    def raster(
        self, x: float, y: float, w: int, h: int, downsample: float
    ) -> np.ndarray:
        """(h, w, 3) uint8 colours of a raster region, as :func:`sample_raster`."""
        cx, cy = self.heatmap.cell_origin
        s = self.heatmap.stride
        xs = (x + np.arange(w) + 0.5) * downsample
        ys = (y + np.arange(h) + 0.5) * downsample
        col = (np.clip(np.floor((xs - cx) / s), -1, self.heatmap.cols) + 1).astype(
            np.intp
        )
        row = (np.clip(np.floor((ys - cy) / s), -1, self.heatmap.rows) + 1).astype(
            np.intp
        )

        # Cells are constant over runs of pixels: colour each (row run, col run)
        # block once, then repeat it (indices are non-decreasing along x and y).
        row_starts, row_counts = _runs(row)
        col_starts, col_counts = _runs(col)
        block = self.lut[self.index[np.ix_(row[row_starts], col[col_starts])]]
        return np.repeat(np.repeat(block, row_counts, axis=0), col_counts, axis=1)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the runs of equal neighbours in ``values``."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1])
    counts = np.diff(np.concatenate([starts, [values.size]]))
    return starts, counts


def heatmap_polygons(heatmap: Heatmap, threshold: float) -> MultiPolygon:
    """Regions whose probability is at least ``threshold``, as polygons.

    The union of the cells (see the module docstring) with
    ``probability >= threshold``, clipped to the slide; holes are kept, cells
    that touch only at a corner are separate polygons. Not-scored cells never
    count.

    Args:
        heatmap: The heatmap.
        threshold: Probability threshold in [0, 1].

    Returns:
        MultiPolygon in level-0 pixels (empty when nothing reaches the
        threshold).
    """
    mask = np.nan_to_num(heatmap.probabilities, nan=-1.0) >= threshold
    if not mask.any():
        return MultiPolygon()

    # One box per horizontal run of hot cells keeps the union small.
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)  # (rows, cols + 1)
    run_rows, run_starts = np.nonzero(edges == 1)
    _, run_ends = np.nonzero(edges == -1)
    boxes = shapely.box(run_starts, run_rows, run_ends, run_rows + 1)
    grid_union = shapely.union_all(boxes)

    # Grid units -> level-0 pixels: x = cx + gx * stride.
    cx, cy = heatmap.cell_origin
    s = heatmap.stride
    placed = affinity.affine_transform(grid_union, [s, 0, 0, s, cx, cy])
    clipped = placed.intersection(box(0, 0, heatmap.width, heatmap.height))
    return as_multipolygon(clipped.simplify(0))


def as_multipolygon(geometry: shapely.Geometry) -> MultiPolygon:
    """The polygonal parts of ``geometry`` as one MultiPolygon."""
    if isinstance(geometry, MultiPolygon):
        return geometry
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry]) if not geometry.is_empty else MultiPolygon()
    parts: list[Polygon] = []
    for part in getattr(geometry, "geoms", []):
        parts.extend(as_multipolygon(part).geoms)
    return MultiPolygon(parts)
