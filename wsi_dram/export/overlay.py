"""Pictures for the pathologist: heatmap over the thumbnail, and glimpse paths.

Both pictures place level-0 geometry on a thumbnail of ``downsample`` level-0
pixels per thumbnail pixel: thumbnail pixel ``(i, j)`` (column i, row j) covers
level-0 ``[i * d, (i + 1) * d) x [j * d, (j + 1) * d)``, so a level-0 point
``(x, y)`` falls in thumbnail column ``floor(x / d)`` and row ``floor(y / d)``.

- :func:`write_heatmap_png`: the thumbnail with the colour-mapped probabilities
  blended over it (transparent where not scored or outside the tissue), the
  tissue outline, a colour bar and a title with the slide id and score. The
  thumbnail is drawn at 1:1 with its top-left at pixel
  ``(PNG_MARGIN_LEFT, PNG_MARGIN_TOP)`` of the PNG.
- :func:`write_glimpse_png` and :func:`write_glimpse_gif`: the glimpse centres
  and their nested squares, coloured from first (dark blue) to last (orange),
  on the thumbnail (at 1:1, top-left at PNG pixel (0, 0); a legend strip below).
  The GIF shows one frame per glimpse step. Thumbnails are not rescaled, so a
  small thumbnail gives a small picture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import shapely
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from wsi_dram.export.heatmap import (
    DEFAULT_CMAP,
    Heatmap,
    as_multipolygon,
    colourize,
    sample_raster,
)

log = logging.getLogger(__name__)

PNG_MARGIN_LEFT = 20
PNG_MARGIN_TOP = 50
_MARGIN_RIGHT = 110
_MARGIN_BOTTOM = 20
_MIN_WIDTH = 480
_MIN_PLOT_HEIGHT = 160
_DPI = 100
GLIMPSE_CMAP = "plasma"
_GLIMPSE_CMAP_RANGE = (0.0, 0.85)  # plasma's last tenth is too pale on white
_LEGEND_HEIGHT = 24


@dataclass
class GlimpsePath:
    """Where the model looked on one field, glimpse by glimpse.

    Attributes:
        centres: (T, 2) level-0 ``(x, y)`` of the glimpse centres, in order.
        sizes: (K,) side of each of the K nested glimpse squares, level-0
            pixels (any order).
    """

    centres: np.ndarray
    sizes: Sequence[float]

    def __post_init__(self) -> None:
        self.centres = np.asarray(self.centres, dtype=np.float64).reshape(-1, 2)
        self.sizes = [float(s) for s in self.sizes]


def _rgb(thumbnail: np.ndarray) -> np.ndarray:
    """Thumbnail as (h, w, 3) uint8 (grey and RGBA accepted)."""
    image = np.asarray(thumbnail)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _tissue_mask(
    geometry: shapely.Geometry, shape: tuple[int, int], d: float
) -> np.ndarray:
    """Thumbnail pixels whose centre lies in ``geometry`` (level-0 px).

    Pixel centres are tested against the prepared geometry (GEOS's indexed
    point-in-polygon), only inside each polygon's bounding box: the cost grows
    with the pixels, not with pixels x vertices as a plain polygon fill does.
    """
    mask = np.zeros(shape, dtype=bool)
    for polygon in as_multipolygon(geometry).geoms:
        shapely.prepare(polygon)
        x0, y0, x1, y1 = polygon.bounds
        c0, r0 = max(0, int(x0 // d)), max(0, int(y0 // d))
        c1, r1 = min(shape[1], int(x1 // d) + 1), min(shape[0], int(y1 // d) + 1)
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (np.arange(c0, c1) + 0.5) * d
        ys = (np.arange(r0, r1) + 0.5) * d
        gx, gy = np.meshgrid(xs, ys)
        mask[r0:r1, c0:c1] |= shapely.contains_xy(polygon, gx, gy)
    return mask


def heatmap_overlay(
    heatmap: Heatmap,
    thumbnail: np.ndarray,
    downsample: float,
    tissue_geometry: shapely.Geometry | None = None,
    alpha: float = 0.6,
    cmap: str = DEFAULT_CMAP,
) -> np.ndarray:
    """Blend the colour-mapped heatmap over the thumbnail.

    Args:
        heatmap: The slide heatmap.
        thumbnail: (h, w, 3) uint8 slide thumbnail.
        downsample: Level-0 pixels per thumbnail pixel.
        tissue_geometry: Tissue (level-0 px); outside it nothing is blended.
        alpha: Opacity of the heatmap where scored.
        cmap: Matplotlib colour map name.

    Returns:
        (h, w, 3) uint8: ``alpha * colour + (1 - alpha) * thumbnail`` where
        scored (and in tissue), the thumbnail elsewhere.
    """
    base = _rgb(thumbnail)
    h, w = base.shape[:2]
    probs = sample_raster(heatmap, 0, 0, w, h, downsample)  # (h, w)
    weight = np.where(np.isfinite(probs), alpha, 0.0)
    if tissue_geometry is not None and not tissue_geometry.is_empty:
        weight = weight * _tissue_mask(tissue_geometry, (h, w), downsample)
    colours = colourize(probs, cmap).astype(np.float64)
    blended = weight[..., None] * colours + (1 - weight[..., None]) * base
    return np.round(blended).astype(np.uint8)


def _save_atomic(image: Image.Image, path: Path, **kwargs: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format=path.suffix.lstrip(".").upper(), **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_heatmap_png(
    heatmap: Heatmap,
    path: str | Path,
    thumbnail: np.ndarray,
    downsample: float,
    tissue_geometry: shapely.Geometry | None = None,
    alpha: float = 0.6,
    cmap: str = DEFAULT_CMAP,
) -> Path:
    """Write ``<slide_id>.heatmap.png``: heatmap over thumbnail, colour bar, title.

    The thumbnail occupies PNG pixels ``[PNG_MARGIN_LEFT, PNG_MARGIN_LEFT + w)``
    by ``[PNG_MARGIN_TOP, PNG_MARGIN_TOP + h)`` at 1:1; see
    :func:`heatmap_overlay` for the colours.

    Args:
        heatmap: The slide heatmap.
        path: Output PNG.
        thumbnail: (h, w, 3) uint8 slide thumbnail.
        downsample: Level-0 pixels per thumbnail pixel.
        tissue_geometry: Tissue (level-0 px): limits the overlay and is
            outlined; None draws neither.
        alpha: Opacity of the heatmap.
        cmap: Matplotlib colour map name.

    Returns:
        The written path.
    """
    path = Path(path)
    image = heatmap_overlay(
        heatmap, thumbnail, downsample, tissue_geometry, alpha, cmap
    )
    h, w = image.shape[:2]
    fig_w = max(PNG_MARGIN_LEFT + w + _MARGIN_RIGHT, _MIN_WIDTH)
    fig_h = PNG_MARGIN_TOP + max(h, _MIN_PLOT_HEIGHT) + _MARGIN_BOTTOM

    # Figure and axes sized in whole pixels so the thumbnail lands at 1:1.
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI)
    ax = fig.add_axes(
        (
            PNG_MARGIN_LEFT / fig_w,
            1 - (PNG_MARGIN_TOP + h) / fig_h,
            w / fig_w,
            h / fig_h,
        )
    )
    ax.imshow(image, interpolation="none", extent=(0, w, h, 0), aspect="auto")
    if tissue_geometry is not None and not tissue_geometry.is_empty:
        for polygon in as_multipolygon(tissue_geometry).geoms:
            for ring in (polygon.exterior, *polygon.interiors):
                xy = np.asarray(ring.coords) / downsample
                ax.plot(xy[:, 0], xy[:, 1], color="black", linewidth=0.8)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()

    bar_h = max(h, _MIN_PLOT_HEIGHT)
    cax = fig.add_axes(
        (
            (PNG_MARGIN_LEFT + w + 20) / fig_w,
            1 - (PNG_MARGIN_TOP + bar_h) / fig_h,
            16 / fig_w,
            bar_h / fig_h,
        )
    )
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormaps[cmap])
    fig.colorbar(mappable, cax=cax, label="tumour probability")
    score = "n/a" if heatmap.score is None else f"{heatmap.score:.3f}"
    fig.text(
        PNG_MARGIN_LEFT / fig_w,
        1 - 12 / fig_h,
        f"{heatmap.slide_id}  -  slide score {score}",
        va="top",
        ha="left",
        fontsize=12,
    )

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with matplotlib.rc_context({"savefig.pad_inches": 0}):
            fig.savefig(tmp, format="png", dpi=_DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%dx%d)", path, fig_w, fig_h)
    return path


def glimpse_colours(steps: int) -> np.ndarray:
    """(steps, 3) uint8 RGB per glimpse step, first to last."""
    lo, hi = _GLIMPSE_CMAP_RANGE
    positions = np.linspace(lo, hi, max(steps, 1))
    rgba = colormaps[GLIMPSE_CMAP](positions)
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def glimpse_box(
    centre: tuple[float, float], size: float, downsample: float
) -> tuple[int, int, int, int]:
    """Inclusive thumbnail pixel box of a level-0 square glimpse.

    Returns:
        ``(left, top, right, bottom)`` thumbnail pixels (Pillow's inclusive
        rectangle) of the square of side ``size`` centred at ``centre``.
    """
    x, y = centre
    half = size / 2.0
    left = int(np.floor((x - half) / downsample))
    top = int(np.floor((y - half) / downsample))
    right = max(left, int(np.ceil((x + half) / downsample)) - 1)
    bottom = max(top, int(np.ceil((y + half) / downsample)) - 1)
    return (left, top, right, bottom)


def _as_paths(glimpses: GlimpsePath | Sequence[GlimpsePath]) -> list[GlimpsePath]:
    return [glimpses] if isinstance(glimpses, GlimpsePath) else list(glimpses)


def _draw_step(
    draw: ImageDraw.ImageDraw,
    path: GlimpsePath,
    t: int,
    colour: tuple[int, int, int],
    downsample: float,
) -> None:
    """Boxes and centre dot of glimpse ``t``, with the segment from ``t - 1``."""
    centre = (float(path.centres[t, 0]), float(path.centres[t, 1]))
    cx, cy = centre[0] / downsample, centre[1] / downsample
    if t > 0:
        px, py = path.centres[t - 1] / downsample
        draw.line([(px, py), (cx, cy)], fill=colour, width=1)
    for size in path.sizes:
        draw.rectangle(glimpse_box(centre, size, downsample), outline=colour, width=1)
    draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)


def _legend(width: int, steps: int) -> Image.Image:
    """Strip with the step colours from first (left) to last (right)."""
    strip = Image.new("RGB", (width, _LEGEND_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    colours = glimpse_colours(steps)
    text_w = 34
    span = max(1, width - 2 * text_w)
    for i in range(span):
        c = colours[min(steps - 1, i * steps // span)]
        draw.line([(text_w + i, 6), (text_w + i, 17)], fill=tuple(int(v) for v in c))
    draw.text((2, 6), "first", fill=(0, 0, 0))
    draw.text((width - text_w + 4, 6), "last", fill=(0, 0, 0))
    return strip


def glimpse_frames(
    thumbnail: np.ndarray,
    downsample: float,
    glimpses: GlimpsePath | Sequence[GlimpsePath],
) -> tuple[Image.Image, list[Image.Image]]:
    """Draw glimpse paths on the thumbnail: the full picture and one frame per step.

    Args:
        thumbnail: (h, w, 3) uint8 slide thumbnail.
        downsample: Level-0 pixels per thumbnail pixel.
        glimpses: One path or several (e.g. one per field).

    Returns:
        ``(picture, frames)``: all steps drawn in order (later steps on top),
        and frame t showing steps 0..t.
    """
    paths = _as_paths(glimpses)
    steps = max((len(p.centres) for p in paths), default=0)
    colours = [tuple(int(v) for v in c) for c in glimpse_colours(steps)]
    canvas = Image.fromarray(_rgb(thumbnail))
    draw = ImageDraw.Draw(canvas)
    frames: list[Image.Image] = []
    for t in range(steps):
        for path in paths:
            if t < len(path.centres):
                _draw_step(draw, path, t, colours[t], downsample)  # type: ignore[arg-type]
        frames.append(canvas.copy())
    return canvas, frames


def write_glimpse_png(
    path: str | Path,
    thumbnail: np.ndarray,
    downsample: float,
    glimpses: GlimpsePath | Sequence[GlimpsePath],
) -> Path:
    """Write ``<slide_id>.glimpses.png``: all glimpses in order, with a legend.

    The thumbnail is at PNG pixels ``[0, w) x [0, h)`` (1:1); a legend strip
    of step colours is appended below it.
    """
    path = Path(path)
    picture, _ = glimpse_frames(thumbnail, downsample, glimpses)
    steps = max((len(p.centres) for p in _as_paths(glimpses)), default=1)
    out = Image.new("RGB", (picture.width, picture.height + _LEGEND_HEIGHT), "white")
    out.paste(picture, (0, 0))
    out.paste(_legend(picture.width, steps), (0, picture.height))
    _save_atomic(out, path)
    log.info("wrote %s (%d steps)", path, steps)
    return path


def write_glimpse_gif(
    path: str | Path,
    thumbnail: np.ndarray,
    downsample: float,
    glimpses: GlimpsePath | Sequence[GlimpsePath],
    frame_ms: int = 600,
) -> Path:
    """Write ``<slide_id>.glimpses.gif``: frame t shows glimpse steps 0..t.

    The thumbnail is at GIF pixels ``[0, w) x [0, h)`` (1:1); colours go
    through GIF's 256-colour palette, so they are close to, not exactly,
    :func:`glimpse_colours`.
    """
    path = Path(path)
    _, frames = glimpse_frames(thumbnail, downsample, glimpses)
    if not frames:
        frames = [Image.fromarray(_rgb(thumbnail))]
    _save_atomic(
        frames[0],
        path,
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
    )
    log.info("wrote %s (%d frames)", path, len(frames))
    return path
