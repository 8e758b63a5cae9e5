"""What pathologists receive: heatmap pictures, QuPath/ASAP files, heatmap TIFF.

Every writer takes plain data, a :class:`~wsi_dram.export.heatmap.Heatmap`
(probabilities on a grid placed in level-0 pixels) plus a thumbnail and tissue
geometry, never a model. :func:`export_all` writes the whole set for one slide:

========================  ==========================================================
``png``                   ``<slide_id>.heatmap.png`` heatmap over the thumbnail
``glimpses``              ``<slide_id>.glimpses.png`` and ``.gif`` (when given)
``geojson``               ``<slide_id>.geojson`` QuPath >= 0.4 objects
``xml``                   ``<slide_id>.xml`` ASAP / Camelyon XML of the polygons
``tiff``                  ``<slide_id>.heatmap.tif`` pyramidal, slide extent and mpp
``lesions``               ``<slide_id>.lesions.csv`` ``confidence,X,Y`` candidates
========================  ==========================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely

from wsi_dram.errors import ConfigError
from wsi_dram.export.asap import write_asap_xml
from wsi_dram.export.heatmap import Heatmap, heatmap_polygons
from wsi_dram.export.lesions import heatmap_lesions, write_lesions_csv
from wsi_dram.export.overlay import (
    GlimpsePath,
    write_glimpse_gif,
    write_glimpse_png,
    write_heatmap_png,
)
from wsi_dram.export.qupath import write_qupath_geojson
from wsi_dram.export.tiff import write_heatmap_label, write_heatmap_tiff

__all__ = [
    "ALL_FORMATS",
    "GlimpsePath",
    "Heatmap",
    "export_all",
    "heatmap_polygons",
]

log = logging.getLogger(__name__)

ALL_FORMATS = ("png", "glimpses", "geojson", "xml", "tiff", "lesions")


def export_all(
    heatmap: Heatmap,
    out_dir: str | Path,
    thumbnail: np.ndarray | None,
    thumbnail_downsample: float,
    tissue_geometry: shapely.Geometry | None,
    glimpses: GlimpsePath | Sequence[GlimpsePath] | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    threshold: float = 0.5,
    cache_store: str | Path | None = None,
    label_downsample: float | None = None,
    lesions: Sequence[tuple[float, int, int]] | None = None,
) -> dict[str, Path]:
    """Write the chosen outputs of one slide into ``out_dir``.

    Each file is written under a temporary name and renamed, so an
    interrupted run leaves whole files or none.

    Args:
        heatmap: The slide heatmap.
        out_dir: Output folder (created if missing).
        thumbnail: (h, w, 3) uint8 slide thumbnail; needed for ``png`` and
            ``glimpses``.
        thumbnail_downsample: Level-0 pixels per thumbnail pixel.
        tissue_geometry: Tissue (level-0 px) to outline on the PNG, or None.
        glimpses: Glimpse paths for the ``glimpses`` pictures; None skips them.
        formats: Any of :data:`ALL_FORMATS`.
        threshold: Probability at or above which regions become polygons
            (GeoJSON annotations, ASAP XML) and lesion candidates.
        cache_store: The slide's ``.ome.zarr`` cache; when given, the heatmap is
            also stored there as the NGFF label ``labels/heatmap``.
        label_downsample: Level-0 px per label pixel (default: the power of
            two at or below ``stride / 4``, at least 1).
        lesions: The ``lesions`` candidates ``(confidence, x, y)`` level-0 px
            (e.g. where the glimpses found tumour); default: the heatmap's
            local maxima at cell centres.

    Returns:
        Output kind -> path: ``png``, ``glimpses_png``, ``glimpses_gif``,
        ``geojson``, ``xml``, ``tiff``, ``lesions``, ``label`` (the store).

    Raises:
        ConfigError: An unknown format, or ``png``/``glimpses`` without a
            thumbnail.
    """
    unknown = sorted(set(formats) - set(ALL_FORMATS))
    if unknown:
        raise ConfigError(
            f"unknown heatmap format(s) {', '.join(unknown)}; "
            f"choose from {', '.join(ALL_FORMATS)}"
        )
    wants_picture = {"png", "glimpses"} & set(formats)
    if wants_picture and thumbnail is None:
        raise ConfigError(
            f"format(s) {', '.join(sorted(wants_picture))} need a thumbnail"
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = heatmap.slide_id
    written: dict[str, Path] = {}
    polygons = None
    if {"geojson", "xml"} & set(formats):
        polygons = heatmap_polygons(heatmap, threshold)

    if "png" in formats and thumbnail is not None:
        written["png"] = write_heatmap_png(
            heatmap,
            out / f"{stem}.heatmap.png",
            thumbnail,
            thumbnail_downsample,
            tissue_geometry,
        )
    if "glimpses" in formats and glimpses is not None and thumbnail is not None:
        written["glimpses_png"] = write_glimpse_png(
            out / f"{stem}.glimpses.png", thumbnail, thumbnail_downsample, glimpses
        )
        written["glimpses_gif"] = write_glimpse_gif(
            out / f"{stem}.glimpses.gif", thumbnail, thumbnail_downsample, glimpses
        )
    if "geojson" in formats:
        written["geojson"] = write_qupath_geojson(
            heatmap, out / f"{stem}.geojson", threshold, polygons
        )
    if "xml" in formats and polygons is not None:
        written["xml"] = write_asap_xml(polygons, out / f"{stem}.xml")
    if "tiff" in formats:
        written["tiff"] = write_heatmap_tiff(heatmap, out / f"{stem}.heatmap.tif")
    if "lesions" in formats:
        found = heatmap_lesions(heatmap, threshold) if lesions is None else lesions
        written["lesions"] = write_lesions_csv(out / f"{stem}.lesions.csv", found)
    if cache_store is not None:
        downsample = label_downsample or float(
            2 ** max(0, math.floor(math.log2(heatmap.stride / 4)))
        )
        write_heatmap_label(heatmap, cache_store, downsample)
        written["label"] = Path(cache_store)
    return written
