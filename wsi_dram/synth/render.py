"""Multi-resolution procedural renderer of a synthetic H&E slide.

Every pyramid level is rendered directly at its own resolution from the same
level-0 description (:class:`~wsi_dram.synth.layout.SlideLayout` plus hashed
nuclei), so writing a whole pyramid costs about 4/3 of level 0, and tiles off the
tissue, ink and border are plain white without any computation.

Colour model (RGB, 0-255):

- glass is white (255);
- tissue is pink stroma with nuclei. Normal tissue: small, round, dark nuclei
  (semi-major 1.6-2.3 µm, ~13 % of the area). Follicles (dense normal tissue):
  the same small dark nuclei, crowded (~33 % of the area). Tumour: large,
  irregular, crowded nuclei (semi-major 2.8-4.2 µm, aspect up to 1.7, ~35 % of
  the area), paler inside with a dark rim (vesicular chromatin). The tumour
  nucleus colour is solved so that the mean colour per area of tumour equals that
  of a follicle: both are darker than normal tissue;
- at levels where a normal nucleus would be under 0.75 px in radius (level 3 and
  coarser at 0.5 µm/px) nuclei are not drawn: every tissue pixel takes the
  analytic mean colour of its kind. From level 3 on a tumour is thus a dark spot
  exactly like a follicle; only levels 0-2 (nuclear texture) tell them apart.
  Low power shows where to look, high power what is there;
- both kinds of tissue share a smooth stain-density variation (±6 %, ~60 µm),
  stroma fibre texture and a small pixel noise (zero mean);
- pen ink (blue or green, ~85 % opaque) and a near-black border band are flat
  colours with a little noise.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import shapely
from shapely.geometry import box

from wsi_dram.synth.fields import (
    NucleiField,
    coverage,
    derive_key,
    rasterise,
    value_noise,
)
from wsi_dram.synth.layout import SlideLayout

log = logging.getLogger(__name__)

# Nuclei geometry in micrometres (spacing, presence, semi-major, aspect, jitter).
NORMAL_NUCLEI_UM = (8.0, 0.75, (1.6, 2.3), (1.0, 1.2), 4.0)
FOLLICLE_NUCLEI_UM = (5.0, 0.8, (1.6, 2.3), (1.0, 1.2), 2.5)
TUMOUR_NUCLEI_UM = (8.5, 0.95, (2.8, 4.2), (1.1, 1.7), 4.25)
# Nuclei are drawn at a level while a normal nucleus's radius is at least this (px).
MIN_DRAWN_RADIUS_PX = 0.75
# Base stain colours (RGB); each slide jitters them a little.
STROMA_RGB = (236.0, 166.0, 206.0)
NUCLEUS_RGB = (72.0, 44.0, 132.0)
# Normal nuclei are slightly lighter at the rim; tumour nuclei much darker there.
NORMAL_RIM_DELTA = 14.0
TUMOUR_RIM_DELTA = -45.0
# Per-nucleus shade (grey levels, zero mean), stroma fibres, pixel noise.
NUCLEUS_SHADE = 10.0
FIBRE_AMPLITUDE = 10.0
PIXEL_NOISE = 5.0
# Smooth stain-density variation: relative amplitude and feature size (µm).
DENSITY_AMPLITUDE = 0.06
DENSITY_PERIOD_UM = 60.0
FIBRE_PERIOD_UM = 3.0
BORDER_GREY = 32.0
PEN_OPACITY = 0.85


def _field(spec: tuple, mpp: float) -> NucleiField:
    spacing, presence, (a0, a1), aspect, jitter = spec
    return NucleiField(
        spacing / mpp, presence, (a0 / mpp, a1 / mpp), aspect, jitter / mpp
    )


@functools.lru_cache(maxsize=1)
def _noise_texture() -> np.ndarray:
    """A fixed 512 x 512 texture of zero-mean triangular noise in [-1, 1]."""
    rng = np.random.default_rng(20240)
    return (rng.uniform(-0.5, 0.5, (2, 512, 512)).sum(axis=0)).astype(np.float32)


class SlideRenderer:
    """``render(level, x, y, w, h)`` for one synthetic slide (thread-safe).

    Args:
        layout: The slide's geometry.
        seed: Cohort seed.
        index: Slide index in the cohort.
    """

    def __init__(self, layout: SlideLayout, seed: int, index: int) -> None:
        self.layout = layout
        mpp = layout.mpp
        self.normal = _field(NORMAL_NUCLEI_UM, mpp)
        self.tumour = _field(TUMOUR_NUCLEI_UM, mpp)
        self.follicle = _field(FOLLICLE_NUCLEI_UM, mpp)
        radius = self.normal.mean_radius()
        self.detail_levels = max(
            0, int(np.floor(np.log2(radius / MIN_DRAWN_RADIUS_PX))) + 1
        )
        self._keys = [derive_key(seed, index, purpose) for purpose in range(10, 16)]
        self._colours(np.random.default_rng([seed, index, 2]))

        self._tissue_rings = layout.tissue_rings()
        self._tumour_rings = layout.tumour_outlines + layout.tumour_holes
        self._follicle_rings = layout.follicle_rings()
        self._follicles = layout.follicles
        self._tissue = layout.tissue
        self._tumour = layout.tumour
        self._pen = [
            (
                poly,
                colour,
                [np.asarray(poly.exterior.coords)]
                + [np.asarray(r.coords) for r in poly.interiors],
            )
            for poly, colour in layout.pen
        ]
        ink = [layout.tissue] + [poly for poly, _ in layout.pen]
        if layout.border is not None:
            ink.append(box(*layout.border))
        self._ink = shapely.union_all(ink)
        for geom in (self._ink, self._tissue, self._tumour, self._follicles):
            shapely.prepare(geom)

    def _colours(self, rng: np.random.Generator) -> None:
        """Per-slide stain colours, and tumour nucleus colours solved so that
        tumour and follicles have the same mean colour per area."""
        self.stroma = np.array(STROMA_RGB) + rng.normal(0.0, 4.0, 3)
        nucleus = np.array(NUCLEUS_RGB) + rng.normal(0.0, 6.0, 3)
        self.normal_in, self.normal_rim = nucleus, nucleus + NORMAL_RIM_DELTA

        def mean(field: NucleiField) -> np.ndarray:
            c, m = coverage(field)
            return self.stroma * (1 - c) + nucleus * c + NORMAL_RIM_DELTA * m

        self.mean_rgb = mean(self.normal)
        self.dense_rgb = mean(self.follicle)
        c_t, m_t = coverage(self.tumour)
        tumour_in = (
            self.dense_rgb - self.stroma * (1 - c_t) - TUMOUR_RIM_DELTA * m_t
        ) / c_t
        self.tumour_in, self.tumour_rim = tumour_in, tumour_in + TUMOUR_RIM_DELTA
        if tumour_in.max() > 255 or (tumour_in + TUMOUR_RIM_DELTA).min() < 0:
            log.warning("tumour nucleus colour %s out of range", tumour_in)

    def __call__(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The (h, w, 3) uint8 pixels of ``level`` at level-pixel ``(x, y)``."""
        out = np.full((h, w, 3), 255, np.uint8)
        f = 2**level
        tile = box(x * f, y * f, (x + w) * f, (y + h) * f)
        if not self._ink.intersects(tile):
            return out
        xs = (np.arange(x, x + w) + 0.5) * f  # level-0 x of the pixel centres
        ys = (np.arange(y, y + h) + 0.5) * f
        rgb = np.full((h, w, 3), 255.0, np.float32)

        if self._tissue.intersects(tile):
            tissue = rasterise(self._tissue_rings, level, x, y, w, h)
            if tissue.any():
                tumour = np.zeros_like(tissue)
                if self._tumour.intersects(tile):
                    tumour = rasterise(self._tumour_rings, level, x, y, w, h) & tissue
                follicle = np.zeros_like(tissue)
                if self._follicles.intersects(tile):
                    rings = self._follicle_rings
                    follicle = rasterise(rings, level, x, y, w, h) & tissue & ~tumour
                colour = self._tissue_colour(level, xs, ys, tumour, follicle)
                rgb[tissue] = colour[tissue]

        for poly, ink, rings in self._pen:
            if poly.intersects(tile):
                mask = rasterise(rings, level, x, y, w, h)
                rgb[mask] = PEN_OPACITY * np.array(ink) + (1 - PEN_OPACITY) * 255.0
        if self.layout.border is not None:
            bx0, by0, bx1, by1 = self.layout.border
            cols = (xs >= bx0) & (xs < bx1)
            rows = (ys >= by0) & (ys < by1)
            rgb[np.ix_(rows, cols)] = BORDER_GREY

        noise = self._pixel_noise(level, x, y, w, h)  # (h, w)
        drawn = (rgb < 255.0).any(axis=2)
        rgb += np.where(drawn, noise, 0.0)[..., None]
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8, copy=False)

    def _tissue_colour(
        self,
        level: int,
        xs: np.ndarray,
        ys: np.ndarray,
        tumour: np.ndarray,
        follicle: np.ndarray,
    ) -> np.ndarray:
        """Tissue colour (h, w, 3) float32 of the grid ``xs`` x ``ys`` (level-0 px);
        ``tumour`` and ``follicle`` are (h, w) masks of those kinds of tissue."""
        h, w = len(ys), len(xs)
        if level >= self.detail_levels:
            colour = np.broadcast_to(self.mean_rgb.astype(np.float32), (h, w, 3)).copy()
            colour[tumour | follicle] = self.dense_rgb
        else:
            k_n, k_t, k_fibre = self._keys[0], self._keys[1], self._keys[2]
            fibre = value_noise(
                k_fibre, xs, ys * 0.35, FIBRE_PERIOD_UM / self.layout.mpp
            )
            stroma = self.stroma[None, None, :] + FIBRE_AMPLITUDE * fibre[..., None]
            colour = self._nuclei(
                self.normal, k_n, xs, ys, stroma, self.normal_in, self.normal_rim
            )
            if tumour.any():
                tumour_colour = self._nuclei(
                    self.tumour, k_t, xs, ys, stroma, self.tumour_in, self.tumour_rim
                )
                colour = np.where(tumour[..., None], tumour_colour, colour)
            if follicle.any():
                dense = self._nuclei(
                    self.follicle,
                    self._keys[5],
                    xs,
                    ys,
                    stroma,
                    self.normal_in,
                    self.normal_rim,
                )
                colour = np.where(follicle[..., None], dense, colour)

        density = value_noise(
            self._keys[3], xs, ys, DENSITY_PERIOD_UM / self.layout.mpp
        )
        scale = (1.0 + DENSITY_AMPLITUDE * density)[..., None]
        return (255.0 - (255.0 - colour) * scale).astype(np.float32)

    @staticmethod
    def _nuclei(
        field: NucleiField,
        key: int,
        xs: np.ndarray,
        ys: np.ndarray,
        stroma: np.ndarray,
        inner: np.ndarray,
        rim: np.ndarray,
    ) -> np.ndarray:
        """Stroma with the field's nuclei drawn in: (h, w, 3) float32."""
        q, shade = field.evaluate(key, xs, ys)  # (h, w), (h, w)
        inside = (q < 1.0)[..., None]
        qv = np.where(inside[..., 0], q, 0.0)[..., None]
        nucleus = inner + (rim - inner) * qv + NUCLEUS_SHADE * shade[..., None]
        return np.where(inside, nucleus, stroma).astype(np.float32)

    def _pixel_noise(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Zero-mean luminance noise (h, w) for level pixels from ``(x, y)``."""
        tex = _noise_texture()
        off = self._keys[4] + 7919 * level
        rows = np.arange(y, y + h) + (off % 509)
        cols = np.arange(x, x + w) + (off // 509) % 503
        return tex.take(rows, axis=0, mode="wrap").take(cols, axis=1, mode="wrap") * (
            PIXEL_NOISE / 2**level
        )
