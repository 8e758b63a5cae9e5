"""QuPath GeoJSON of a slide heatmap: one detection per field, tumour polygons.

The file is a GeoJSON ``FeatureCollection`` in level-0 pixel coordinates (origin
at the top-left of the full-resolution image, x right, y down), laid out the way
QuPath 0.4 and later write objects (``PathObjectTypeAdapters`` in qupath-core,
changed to this layout in qupath/qupath pull request 1099, released in 0.4.0):

- ``feature["id"]``: a UUID string (QuPath >= 0.4 keeps it as the object id);
- ``feature["properties"]["objectType"]``: ``"detection"`` or ``"annotation"``;
- ``feature["properties"]["measurements"]``: an object ``{"name": value}``
  (QuPath >= 0.4 writes this form; its reader also accepts the older
  ``[{"name": ..., "value": ...}]`` list);
- ``feature["properties"]["classification"]``: ``{"name": "Tumor",
  "color": [r, g, b]}`` on the annotations;
- ``feature["properties"]["name"]``: a display name on the annotations.

Read by QuPath 0.4, 0.5 and 0.6 (*File > Import objects from file*, or drag and
drop the file onto the open slide). QuPath 0.3 and earlier expected a different
layout (``object_type``, ``measurements`` as a list, ``colorRGB``) and are not
supported.

Detections: one per scored field; the geometry is the field's *cell* (the
``stride``-sided square centred on the field, clipped to the slide; see
:mod:`wsi_dram.export.heatmap`), with the measurement ``"Tumor probability"``.
In QuPath, *Measure > Show measurement maps* colours them by it.
Annotations: one per polygon of :func:`heatmap_polygons` (holes included),
classified ``Tumor``, with the measurements ``"Max tumor probability"`` and
``"Mean tumor probability"`` of the cells inside.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

from wsi_dram.export.heatmap import Heatmap, heatmap_polygons
from wsi_dram.jsontext import strict_json

log = logging.getLogger(__name__)

PROBABILITY_MEASUREMENT = "Tumor probability"
MAX_MEASUREMENT = "Max tumor probability"
MEAN_MEASUREMENT = "Mean tumor probability"
TUMOR_CLASS = "Tumor"
TUMOR_COLOUR = (200, 0, 0)


def _coords(geometry: dict[str, Any]) -> dict[str, Any]:
    """GeoJSON geometry with tuples turned into lists of plain floats."""

    def convert(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if value and isinstance(value[0], (int, float)):
                return [round(float(v), 3) for v in value]
            return [convert(v) for v in value]
        return value

    return {"type": geometry["type"], "coordinates": convert(geometry["coordinates"])}


def detection_feature(
    box_xy: tuple[float, float, float, float], probability: float
) -> dict[str, Any]:
    """One QuPath detection feature for a scored cell.

    Args:
        box_xy: The cell as ``(x0, y0, x1, y1)`` level-0 pixels.
        probability: Tumour probability in [0, 1].

    Returns:
        A GeoJSON Feature dict (QuPath >= 0.4 layout).
    """
    x0, y0, x1, y1 = (round(float(v), 3) for v in box_xy)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "measurements": {PROBABILITY_MEASUREMENT: round(float(probability), 6)},
        },
    }


def annotation_feature(
    polygon: Polygon,
    name: str,
    measurements: dict[str, float],
    colour: tuple[int, int, int] = TUMOR_COLOUR,
) -> dict[str, Any]:
    """One QuPath annotation feature classified ``Tumor``.

    Args:
        polygon: Level-0 pixel polygon (holes kept).
        name: Display name in QuPath's annotation list.
        measurements: Measurement name -> value.
        colour: RGB of the ``Tumor`` class.

    Returns:
        A GeoJSON Feature dict (QuPath >= 0.4 layout).
    """
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": _coords(mapping(polygon)),
        "properties": {
            "objectType": "annotation",
            "name": name,
            "classification": {"name": TUMOR_CLASS, "color": [int(c) for c in colour]},
            "measurements": {k: round(float(v), 6) for k, v in measurements.items()},
        },
    }


def _polygon_stats(heatmap: Heatmap, polygon: Polygon) -> dict[str, float]:
    """Max and mean probability of the scored cells whose centre is inside."""
    x0, y0, x1, y1 = polygon.bounds
    cx, cy = heatmap.cell_origin
    s = heatmap.stride
    c0, c1 = max(0, int((x0 - cx) // s)), min(heatmap.cols, int((x1 - cx) // s) + 1)
    r0, r1 = max(0, int((y0 - cy) // s)), min(heatmap.rows, int((y1 - cy) // s) + 1)
    values: list[float] = []
    for row in range(r0, r1):
        xs = cx + (np.arange(c0, c1) + 0.5) * s
        ys = np.full(xs.shape, cy + (row + 0.5) * s)
        inside = shapely.contains_xy(polygon, xs, ys)
        probs = heatmap.probabilities[row, c0:c1][inside]
        values.extend(probs[np.isfinite(probs)].tolist())
    if not values:
        return {}
    return {MAX_MEASUREMENT: max(values), MEAN_MEASUREMENT: float(np.mean(values))}


def write_qupath_geojson(
    heatmap: Heatmap,
    path: str | Path,
    threshold: float = 0.5,
    polygons: MultiPolygon | None = None,
    colour: tuple[int, int, int] = TUMOR_COLOUR,
) -> Path:
    """Write the heatmap as a QuPath GeoJSON FeatureCollection.

    Features are streamed to the file one by one (a 100k x 100k slide at a
    256 px stride has ~150k detections). The file is written under a temporary
    name and renamed, so a reader never sees half a file.

    Args:
        heatmap: The slide heatmap.
        path: Output file, normally ``<slide_id>.geojson``.
        threshold: Probability at or above which cells form the annotations.
        polygons: Precomputed :func:`heatmap_polygons` (level-0 px), if any.
        colour: RGB of the ``Tumor`` classification.

    Returns:
        The written path.
    """
    path = Path(path)
    if polygons is None:
        polygons = heatmap_polygons(heatmap, threshold)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows, cols = np.nonzero(np.isfinite(heatmap.probabilities))
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write('{"type": "FeatureCollection", "features": [\n')
            first = True
            for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
                prob = float(heatmap.probabilities[row, col])
                feature = detection_feature(heatmap.cell_box(row, col), prob)
                out.write(("" if first else ",\n") + strict_json(feature))
                first = False
            for index, polygon in enumerate(polygons.geoms, start=1):
                stats = _polygon_stats(heatmap, polygon)
                name = f"{TUMOR_CLASS} region {index} (p >= {threshold:g})"
                feature = annotation_feature(polygon, name, stats, colour)
                out.write(("" if first else ",\n") + strict_json(feature))
                first = False
            out.write("\n]}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "wrote %s (%d detections, %d tumour polygons)",
        path,
        rows.size,
        len(polygons.geoms),
    )
    return path
