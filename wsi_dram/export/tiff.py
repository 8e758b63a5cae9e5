"""Pyramidal heatmap TIFF with the slide's extent, and the heatmap NGFF label.

The TIFF has the slide's level-0 size and mpp, so viewers that overlay images
by physical size (QuPath, ASAP, OpenSlide-based tools) line it up with the
slide. Each pixel takes the colour of the heatmap cell under its centre
(nearest); unscored pixels are white. Tiles are rendered on demand by
:func:`wsi_dram.slides.tiff_writer.write_pyramidal_tiff`, so no full-resolution
canvas is ever held in memory: a render call only samples the small
probability grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wsi_dram.export.heatmap import (
    DEFAULT_CMAP,
    Heatmap,
    RasterColours,
    colour_lut,
    sample_raster,
)

log = logging.getLogger(__name__)

NOT_SCORED_RGB = (255, 255, 255)


def heatmap_renderer(
    heatmap: Heatmap, cmap: str = DEFAULT_CMAP
) -> Callable[[int, int, int, int, int], np.ndarray]:
    """A ``render(level, x, y, w, h)`` callback for the pyramidal TIFF writer.

    Args:
        heatmap: The slide heatmap.
        cmap: Matplotlib colour map name.

    Returns:
        A function giving the (h, w, 3) uint8 pixels of pyramid level
        ``level`` (``2**level`` level-0 pixels per pixel) at level-pixel
        ``(x, y)``.
    """

    colours = RasterColours(heatmap, cmap, NOT_SCORED_RGB)

    def render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return colours.raster(x, y, w, h, float(2**level))  # (h, w, 3)

    return render


def write_heatmap_tiff(
    heatmap: Heatmap,
    path: str | Path,
    cmap: str = DEFAULT_CMAP,
    tile: int = 256,
    compression: str = "zlib",
    quality: int = 95,
) -> Path:
    """Write the colour-mapped heatmap as a tiled pyramidal TIFF.

    Levels are halved (level k is ``(width >> k, height >> k)``) until the long
    side is at most 512 px; the level-0 size is the slide's ``width x height`` and the
    resolution tags carry its mpp, so OpenSlide reports ``openslide.mpp-x``.

    Args:
        heatmap: The slide heatmap.
        path: Output file, normally ``<slide_id>.heatmap.tif``.
        cmap: Matplotlib colour map name.
        tile: Tile side in pixels.
        compression: ``"zlib"`` (lossless: the colours are exact and flat
            cells compress well), ``"jpeg"`` or ``"none"``.
        quality: JPEG quality (ignored otherwise).

    Returns:
        The written path.
    """
    from wsi_dram.slides.tiff_writer import write_pyramidal_tiff

    path = Path(path)
    levels = write_pyramidal_tiff(
        path,
        heatmap.width,
        heatmap.height,
        heatmap_renderer(heatmap, cmap),
        mpp=heatmap.mpp,
        tile=tile,
        compression=compression,
        quality=quality,
        description=f"wsi-dram tumour heatmap of {heatmap.slide_id} ({cmap})",
    )
    log.info("wrote %s (%d levels)", path, len(levels))
    return path


def heatmap_label_array(heatmap: Heatmap, downsample: float) -> np.ndarray:
    """The heatmap as a uint8 raster for an NGFF label.

    Pixel ``(row, col)`` covers level-0 ``[col * d, (col + 1) * d)`` along x
    (same for y) and holds ``round(probability * 255)`` of the cell under its
    centre, 0 where not scored (so 0 also stands for probability < 1/510).

    Args:
        heatmap: The slide heatmap.
        downsample: Level-0 pixels per label pixel (``d``).

    Returns:
        (ceil(height / d), ceil(width / d)) uint8 array, ``(y, x)``.
    """
    h = max(1, math.ceil(heatmap.height / downsample))
    w = max(1, math.ceil(heatmap.width / downsample))
    probs = sample_raster(heatmap, 0, 0, w, h, downsample)  # (h, w)
    return np.round(np.nan_to_num(probs, nan=0.0) * 255).astype(np.uint8)


def write_heatmap_label(
    heatmap: Heatmap,
    store: str | Path,
    downsample: float,
    name: str = "heatmap",
    cmap: str = DEFAULT_CMAP,
) -> np.ndarray:
    """Store the heatmap as the NGFF label ``labels/<name>`` of a slide cache.

    Uses :func:`wsi_dram.cache.store.write_label`; the label colours are the
    colour map (value 0 transparent).

    Args:
        heatmap: The slide heatmap.
        store: The slide's ``.ome.zarr`` cache folder.
        downsample: Level-0 pixels per label pixel (e.g. the cache's mask
            downsample).
        name: Label name.
        cmap: Matplotlib colour map for the label's ``image-label.colors``.

    Returns:
        The (y, x) uint8 array that was stored.
    """
    from wsi_dram.cache.store import write_label

    array = heatmap_label_array(heatmap, downsample)
    lut = colour_lut(cmap)
    colours = {
        v: (int(lut[v, 0]), int(lut[v, 1]), int(lut[v, 2]), 255) for v in range(1, 256)
    }
    write_label(store, name, array, downsample, colors=colours)
    log.info(
        "stored label %s in %s (%dx%d)", name, store, array.shape[1], array.shape[0]
    )
    return array
