"""ASAP XML of tumour polygons, laid out like the Camelyon16 reference files.

ASAP (and the Camelyon16/17 evaluation code) reads a polygon annotation as one
outer ring without holes, with its group in ``PartOfGroup``. The Camelyon
convention, which our own reader (:func:`wsi_dram.slides.annotations.
read_annotations`) follows, is: tumour = union of groups ``_0`` and ``_1``
minus the union of group ``_2`` (non-tumour regions inside a lesion).

So a region with holes is written as its outer ring in ``_0`` plus each hole in
``_2``. A hole may itself contain tumour (an island); then the ``_2`` part is
"hole minus island", which is a ring, and is cut into hole-free pieces so that
``union(_0) - union(_2)`` gives back exactly the region.

Coordinates are level-0 pixels; rings are written open (ASAP closes them).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import shapely
from shapely.geometry import LineString, Polygon
from shapely.ops import split

from wsi_dram.export.heatmap import as_multipolygon

log = logging.getLogger(__name__)

TUMOR_GROUP = "_0"
EXCLUSION_GROUP = "_2"
ANNOTATION_COLOUR = "#F4FA58"
GROUP_COLOURS = {"_0": "#00ff00", "_1": "#00ffff", "_2": "#0000ff"}


def hole_free_parts(polygon: Polygon, max_cuts: int = 100_000) -> list[Polygon]:
    """Cut a polygon with holes into pieces without holes.

    Each hole is cut by a vertical line through one of its interior points,
    which opens it into the outer ring of the pieces on either side. The union
    of the pieces equals the polygon.

    Args:
        polygon: Any valid polygon.
        max_cuts: Safety bound on the number of cuts.

    Returns:
        Hole-free polygons whose union is ``polygon``.
    """
    done: list[Polygon] = []
    todo = [polygon]
    cuts = 0
    while todo:
        part = todo.pop()
        if part.is_empty:
            continue
        if not part.interiors:
            done.append(part)
            continue
        cuts += 1
        if cuts > max_cuts:
            raise RuntimeError("hole_free_parts: too many cuts; geometry is invalid")
        x = Polygon(part.interiors[0]).representative_point().x
        _, y0, _, y1 = part.bounds
        pieces = as_multipolygon(split(part, LineString([(x, y0 - 1), (x, y1 + 1)])))
        todo.extend(pieces.geoms)
    return done


def asap_parts(geometry: shapely.Geometry) -> tuple[list[Polygon], list[Polygon]]:
    """Tumour rings (for ``_0``) and exclusion rings (for ``_2``) of a region.

    Args:
        geometry: (Multi)polygon in level-0 pixels.

    Returns:
        ``(tumour, exclusion)``: hole-free polygons with
        ``union(tumour) - union(exclusion) == geometry``.
    """
    region = as_multipolygon(geometry)
    tumour: list[Polygon] = []
    exclusion: list[Polygon] = []
    for polygon in region.geoms:
        tumour.append(Polygon(polygon.exterior))
        for ring in polygon.interiors:
            # Remove islands of the region lying inside this hole.
            gap = as_multipolygon(Polygon(ring).difference(region))
            for piece in gap.geoms:
                exclusion.extend(hole_free_parts(piece))
    return tumour, exclusion


def _number(value: float) -> str:
    """Compact decimal text of a coordinate (up to 3 decimals)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _annotation(parent: ET.Element, name: str, group: str, ring: Polygon) -> None:
    node = ET.SubElement(
        parent,
        "Annotation",
        Name=name,
        Type="Polygon",
        PartOfGroup=group,
        Color=ANNOTATION_COLOUR,
    )
    coords = ET.SubElement(node, "Coordinates")
    for order, (x, y) in enumerate(list(ring.exterior.coords)[:-1]):
        ET.SubElement(
            coords, "Coordinate", Order=str(order), X=_number(x), Y=_number(y)
        )


def write_asap_xml(geometry: shapely.Geometry, path: str | Path) -> Path:
    """Write tumour polygons (with holes) as Camelyon-style ASAP XML.

    Outer rings go to group ``_0``, holes (minus any islands) to ``_2``; the
    groups ``_0``, ``_1``, ``_2`` are declared in ``AnnotationGroups`` as in the
    Camelyon16 files. An empty geometry gives a file with no annotations. The
    file is written under a temporary name and renamed.

    Args:
        geometry: (Multi)polygon in level-0 pixels.
        path: Output file, normally ``<slide_id>.xml``.

    Returns:
        The written path.
    """
    path = Path(path)
    tumour, exclusion = asap_parts(geometry)

    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    index = 0
    for group, rings in ((TUMOR_GROUP, tumour), (EXCLUSION_GROUP, exclusion)):
        for ring in rings:
            _annotation(annotations, f"_{index}", group, ring)
            index += 1
    groups = ET.SubElement(root, "AnnotationGroups")
    for name, colour in GROUP_COLOURS.items():
        group_node = ET.SubElement(
            groups, "Group", Name=name, PartOfGroup="None", Color=colour
        )
        ET.SubElement(group_node, "Attributes")
    ET.indent(root, space="\t")

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "wrote %s (%d %s, %d %s polygons)",
        path,
        len(tumour),
        TUMOR_GROUP,
        len(exclusion),
        EXCLUSION_GROUP,
    )
    return path
