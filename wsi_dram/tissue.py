"""Tissue detection on a slide thumbnail: saturation, Otsu with a floor, no ink.

The recipe (DESIGN section 5), in the order :func:`tissue_mask_rgb` applies it to an
RGB thumbnail of about 8 µm/px:

1. **Dark floor.** Pixels whose brightest channel is below ``dark_limit`` are never
   tissue: black scanner padding carries a few grey levels of noise, so its HSV
   saturation is high ((3, 0, 5) has S = 1) and it would otherwise win the Otsu
   split. Black marker ink falls here too.
2. **Pen ink.** Blue and green marker strokes are more saturated than H&E and have
   hues H&E never has (green 70-190°, blue 190-250° at high saturation; eosin and
   haematoxylin sit between 250° and 20°). They are flagged, widened by
   ``pen_margin_um`` to catch their anti-aliased rims, and excluded.
3. **Saturation, median blur.** S = (max - min) / max per pixel, set to 0 on dark
   and ink pixels, then a median filter of ``median_um`` (odd, in thumbnail px).
4. **Threshold.** Otsu's threshold over the candidate pixels, never below
   ``min_saturation`` (empty glass has S of a few hundredths: a blank slide's
   maximum is 0.024, so Otsu on it would split sensor noise); or the fixed
   ``threshold`` when given.
5. **Exact outlines.** The median-filtered mask only seeds objects: each is grown
   back (morphological reconstruction) inside the unfiltered "saturation above
   threshold" mask, so isolated noise pixels vanish while real objects keep their
   exact pixel outline (a median filter alone rounds corners away).
6. **Closing** with a disk of ``closing_um``, then removal of objects smaller than
   ``min_object_mm2`` and filling of holes smaller than ``min_hole_mm2``; dark and
   ink pixels are removed once more at the end.

Sizes are physical (µm, mm²) and turned into thumbnail pixels through the
thumbnail's mpp. :func:`detect_tissue` runs this on a slide and returns the mask,
its level-0 polygons (exact pixel outlines, with holes) and the area in mm².
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from skimage.filters import threshold_otsu
from skimage.filters.rank import median as rank_median
from skimage.morphology import disk

from wsi_dram.errors import NoTissueError
from wsi_dram.slides.reader import Slide

log = logging.getLogger(__name__)


@dataclass
class TissueParams:
    """Tissue detection parameters (physical units; see the module docstring).

    Attributes:
        target_mpp: micrometres per pixel of the thumbnail the mask is made on.
        threshold: fixed saturation threshold in [0, 1]; None for Otsu.
        min_saturation: floor of the (Otsu) threshold; blank glass stays below.
        dark_limit: pixels whose brightest channel (0-255) is below are never tissue.
        median_um: side of the median filter on saturation, in µm.
        closing_um: radius of the closing disk, in µm.
        min_object_mm2: tissue pieces smaller than this are dropped.
        min_hole_mm2: holes smaller than this are filled.
        pen_filter: exclude blue/green marker ink.
        pen_blue_hue: (low, high) hue range of blue ink, degrees.
        pen_blue_min_saturation: blue ink is at least this saturated.
        pen_green_hue: (low, high) hue range of green ink, degrees.
        pen_green_min_saturation: green ink is at least this saturated.
        pen_margin_um: ink masks are widened by this distance, in µm.
        mode: "brightfield" (H&E on white glass: the recipe above),
            "fluorescence" (signal on a dark background: brightness instead of
            saturation, no dark floor, no ink filter) or "auto": fluorescence
            when the thumbnail's median brightest channel is below
            ``fluorescence_background``.
        fluorescence_background: see ``mode`` (0-255).
        min_fluorescence: floor of the Otsu threshold on brightness (0-255) in
            fluorescence mode.
    """

    target_mpp: float = 8.0
    threshold: float | None = None
    min_saturation: float = 0.05
    dark_limit: int = 50
    median_um: float = 40.0
    closing_um: float = 16.0
    min_object_mm2: float = 0.01
    min_hole_mm2: float = 0.01
    pen_filter: bool = True
    pen_blue_hue: tuple[float, float] = (190.0, 250.0)
    pen_blue_min_saturation: float = 0.5
    pen_green_hue: tuple[float, float] = (70.0, 190.0)
    pen_green_min_saturation: float = 0.25
    pen_margin_um: float = 16.0
    mode: Literal["auto", "brightfield", "fluorescence"] = "auto"
    fluorescence_background: int = 80
    min_fluorescence: float = 8.0


@dataclass
class Tissue:
    """Detected tissue of one slide.

    Attributes:
        mask: bool (h, w) tissue mask; pixel (r, c) covers level-0 pixels
            [c*d, c*d + d) x [r*d, r*d + d) with d = ``downsample``.
        downsample: level-0 pixels per mask pixel (exact).
        geometry: the mask's outline as a MultiPolygon with holes, level-0 px.
        area_mm2: tissue area, mask pixels x downsample² x mpp_x x mpp_y / 1e6.
        bbox: (x0, y0, x1, y1) level-0 px, x1/y1 exclusive, clipped to the slide.
        pen_mask: bool (h, w) marker-ink pixels found (not tissue).
        threshold: the saturation threshold used.
    """

    mask: np.ndarray
    downsample: float
    geometry: MultiPolygon
    area_mm2: float
    bbox: tuple[int, int, int, int]
    pen_mask: np.ndarray
    threshold: float


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation [0, 1] and value (max channel, 0-255)."""
    rgb = rgb[..., :3].astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    vmax = rgb.max(axis=-1)
    delta = vmax - rgb.min(axis=-1)
    saturation = np.where(vmax > 0, delta / np.maximum(vmax, 1e-6), 0.0)
    safe = np.maximum(delta, 1e-6)
    hue = np.where(
        vmax == r,
        ((g - b) / safe) % 6.0,
        np.where(vmax == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    return hue, saturation.astype(np.float32), vmax


def _px(um: float, mpp: float) -> int:
    return max(0, int(round(um / mpp)))


def pen_mask_rgb(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """Blue and green marker ink (widened by ``pen_margin_um``).

    Args:
        rgb: (h, w, 3) uint8 thumbnail.
        mpp: micrometres per thumbnail pixel.
        params: detection parameters.

    Returns:
        bool (h, w); all False when ``params.pen_filter`` is off.
    """
    if not params.pen_filter:
        return np.zeros(rgb.shape[:2], dtype=bool)
    hue, saturation, value = _hsv(rgb)
    lit = value >= params.dark_limit
    lo, hi = params.pen_blue_hue
    blue = (hue >= lo) & (hue < hi) & (saturation >= params.pen_blue_min_saturation)
    lo, hi = params.pen_green_hue
    green = (hue >= lo) & (hue < hi) & (saturation >= params.pen_green_min_saturation)
    ink = (blue | green) & lit
    margin = _px(params.pen_margin_um, mpp)
    if margin > 0 and ink.any():
        ink = ndimage.binary_dilation(ink, structure=disk(margin))
    return ink


def is_fluorescence(rgb: np.ndarray, params: TissueParams) -> bool:
    """Whether ``rgb`` (h, w, 3) is treated as a fluorescence (dark-field) image."""
    if params.mode != "auto":
        return params.mode == "fluorescence"
    return float(np.median(rgb.max(axis=2))) < params.fluorescence_background


def _fluorescence_threshold(brightness: np.ndarray, params: TissueParams) -> float:
    if params.threshold is not None:
        return float(params.threshold) * 255.0
    if float(brightness.max()) <= params.min_fluorescence:
        return float(params.min_fluorescence)
    return max(float(threshold_otsu(brightness)), float(params.min_fluorescence))


def _saturation_threshold(values: np.ndarray, params: TissueParams) -> float:
    if params.threshold is not None:
        return float(params.threshold)
    if values.size == 0 or float(values.max()) <= params.min_saturation:
        return float(params.min_saturation)
    otsu = float(threshold_otsu(values))
    return max(otsu, float(params.min_saturation))


def tissue_mask_rgb(
    rgb: np.ndarray, mpp: float, params: TissueParams | None = None
) -> np.ndarray:
    """Tissue mask of an RGB thumbnail (pure array function).

    Args:
        rgb: (h, w, 3) uint8 RGB, already composited over white.
        mpp: micrometres per pixel of ``rgb`` (turns the µm/mm² sizes into px).
        params: detection parameters; defaults when None.

    Returns:
        bool (h, w) tissue mask.
    """
    return _masks(rgb, mpp, params or TissueParams())[0]


def _masks(
    rgb: np.ndarray, mpp: float, params: TissueParams
) -> tuple[np.ndarray, np.ndarray, float]:
    """(tissue mask, ink mask, saturation threshold) of an RGB thumbnail."""
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    _, saturation, value = _hsv(rgb)
    if is_fluorescence(rgb, params):
        # Signal on a dark background: brightness plays saturation's part.
        ink = np.zeros(value.shape, bool)
        excluded = ink
        brightness = rgb.max(axis=2).astype(np.float32)
        threshold = _fluorescence_threshold(brightness, params) / 255.0
        saturation = brightness / 255.0
    else:
        dark = value < params.dark_limit
        ink = pen_mask_rgb(rgb, mpp, params)
        excluded = dark | ink
        saturation = np.where(excluded, 0.0, saturation)
        threshold = _saturation_threshold(saturation[~excluded], params)
    raw = (saturation > threshold) & ~excluded
    if not raw.any():
        mask = raw
    else:
        size = _px(params.median_um, mpp) | 1
        if size > 1:
            s8 = np.round(saturation * 255).astype(np.uint8)
            smooth = rank_median(s8, footprint=np.ones((size, size), bool))
            seeds = (smooth.astype(np.float32) / 255 > threshold) & raw
        else:
            seeds = raw
        # Morphological reconstruction of the seeds inside ``raw``: keep the
        # 8-connected components of ``raw`` that hold a seed (the same mask as
        # skimage's reconstruction, at a twentieth of its memory).
        labels, _ = ndimage.label(raw, structure=np.ones((3, 3), bool))
        keep = np.zeros(int(labels.max()) + 1, bool)
        keep[labels[seeds]] = True
        keep[0] = False
        mask = keep[labels]
        radius = _px(params.closing_um, mpp)
        if radius > 0 and mask.any():
            pad = radius + 1
            padded = np.pad(mask, pad)
            padded = ndimage.binary_closing(padded, structure=disk(radius))
            mask = padded[pad:-pad, pad:-pad]
        px_per_mm2 = 1e6 / (mpp * mpp)
        mask = _remove_small(mask, params.min_object_mm2 * px_per_mm2)
        holes = _remove_small(~mask, params.min_hole_mm2 * px_per_mm2, border=True)
        mask = ~holes
        mask &= ~excluded
    return mask, ink, threshold


def _remove_small(mask: np.ndarray, min_px: float, border: bool = False) -> np.ndarray:
    """Drop connected components (8-connected) smaller than ``min_px`` pixels.

    With ``border`` True, components touching the image border are always kept (the
    background around the tissue is not a hole).
    """
    if min_px <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_px
    if border:
        edge = np.unique(
            np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        )
        keep[edge] = True
    keep[0] = False
    return keep[labels]


def mask_to_polygons(mask: np.ndarray, downsample: float = 1.0) -> MultiPolygon:
    """Exact pixel-edge outlines of a mask as polygons with holes.

    Args:
        mask: bool (h, w).
        downsample: level-0 pixels per mask pixel; output is scaled by it.

    Returns:
        MultiPolygon in level-0 px whose area is mask.sum() * downsample².
    """
    if not mask.any():
        return MultiPolygon()
    # One box per horizontal run of mask pixels; the runs tile the mask exactly.
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)  # same row order as the starts
    # Runs repeated unchanged on the next row extend one taller box (far fewer
    # boxes to union for smooth outlines).
    open_boxes: dict[tuple[int, int], int] = {}
    x0s, y0s, x1s, y1s = [], [], [], []
    bounds = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for row in range(mask.shape[0]):
        current = {
            (int(a), int(b)): row
            for a, b in zip(
                starts[bounds[row] : bounds[row + 1]],
                ends[bounds[row] : bounds[row + 1]],
                strict=True,
            )
        }
        for run, top in open_boxes.items():
            if run in current:
                current[run] = top
            else:
                x0s.append(run[0])
                x1s.append(run[1])
                y0s.append(top)
                y1s.append(row)
        open_boxes = current
    for run, top in open_boxes.items():
        x0s.append(run[0])
        x1s.append(run[1])
        y0s.append(top)
        y1s.append(mask.shape[0])
    boxes = shapely.box(x0s, y0s, x1s, y1s)
    union = shapely.simplify(shapely.union_all(boxes), 0)
    if downsample != 1.0:
        union = shapely.transform(union, lambda xy: xy * downsample)
    if isinstance(union, Polygon):
        return MultiPolygon([union])
    if isinstance(union, MultiPolygon):
        return union
    parts = [g for g in getattr(union, "geoms", []) if isinstance(g, Polygon)]
    return MultiPolygon(parts)


def detect_tissue(slide: Slide, params: TissueParams | None = None) -> Tissue:
    """Detect tissue on a slide from its thumbnail at ``params.target_mpp``.

    Args:
        slide: an open slide.
        params: detection parameters; defaults when None.

    Returns:
        The :class:`Tissue` (mask, level-0 polygons, area, bounding box).

    Raises:
        NoTissueError: nothing on the slide passes as tissue.
    """
    params = params or TissueParams()
    thumb, downsample = slide.thumbnail(params.target_mpp)  # (h, w, 3)
    mpp = slide.mpp * downsample
    mask, pen, threshold = _masks(thumb, mpp, params)
    if not mask.any():
        raise NoTissueError(f"no tissue found in {slide.path.name}", slide.path)

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = (
        int(cols[0] * downsample),
        int(rows[0] * downsample),
        int(min(slide.width, (cols[-1] + 1) * downsample)),
        int(min(slide.height, (rows[-1] + 1) * downsample)),
    )
    area_mm2 = float(mask.sum()) * downsample**2 * slide.mpp * slide.mpp_y / 1e6
    geometry = mask_to_polygons(mask, downsample)
    kind = "brightness" if is_fluorescence(thumb, params) else "saturation"
    log.info(
        "%s: tissue %.2f mm² in %d piece(s), %s threshold %.3f",
        slide.slide_id,
        area_mm2,
        len(geometry.geoms),
        kind,
        threshold,
    )
    return Tissue(mask, downsample, geometry, area_mm2, bbox, pen, threshold)
