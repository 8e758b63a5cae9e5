"""Where things are on a synthetic slide: tissue, tumour, follicles, pen ink,
border band.

A :class:`SlideLayout` is drawn once per slide from a numpy generator seeded by
``(seed, index)``; all geometry is in level-0 pixels ``(x, y)``. The tumour is
given as the rings written to the ASAP XML (``_0`` outlines, ``_2`` normal
islands and tissue holes inside them), and the renderer fills exactly those rings,
so pixels and annotation agree to the pixel.

Tumours are small (metastases of 0.1-0.5 mm across on an 8k slide at 0.5 µm/px),
and every slide, tumour or not, also carries a few lymphoid follicles: dense
normal regions of the same size that look exactly like a tumour at low power (see
:mod:`wsi_dram.synth.render`). Follicles are not annotated. At low power a
reader sees where to look; only high power says what it is.

Sizes that mean something physically (nuclei, pen width, the smallest tumour)
are set in micrometres and converted with the slide's mpp; the layout of tissue
pieces scales with the slide.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

# Ink colours (RGB) of the pen marks: blue and green markers.
PEN_COLOURS = ((40, 70, 165), (35, 125, 80))
# Chance that a slide has pen marks / a dark scanner border band.
PEN_PROBABILITY = 0.35
BORDER_PROBABILITY = 0.25
# Smallest tumour (and follicle) radius in micrometres.
MIN_TUMOUR_RADIUS_UM = 60.0
# Radius of the first tumour region / of the others / of a follicle, as a share of
# the radius of the tissue piece it lies in (uniform in the range).
FIRST_TUMOUR_SCALE = (0.06, 0.14)
OTHER_TUMOUR_SCALE = (0.04, 0.10)
FOLLICLE_SCALE = (0.05, 0.11)
# Follicles per slide (uniform, inclusive), on tumour and normal slides alike.
FOLLICLES = (3, 6)


@dataclass
class SlideLayout:
    """Geometry of one synthetic slide, level-0 pixels.

    Attributes:
        width: Level-0 width (px).
        height: Level-0 height (px).
        mpp: Pixel size (µm/px).
        tissue: Tissue pieces (MultiPolygon, holes are glass).
        tumour_outlines: ``_0`` rings, each (n, 2) ``(x, y)``.
        tumour_holes: ``_2`` rings (normal tissue or glass inside a tumour).
        follicles: Dense normal regions (MultiPolygon, not annotated), disjoint
            from the tumour.
        pen: Pen strokes as polygons (the inked area) with their RGB colour.
        border: Dark border band as a rectangle ``(x0, y0, x1, y1)`` or None.
    """

    width: int
    height: int
    mpp: float
    tissue: MultiPolygon
    tumour_outlines: list[np.ndarray] = field(default_factory=list)
    tumour_holes: list[np.ndarray] = field(default_factory=list)
    follicles: MultiPolygon = field(default_factory=MultiPolygon)
    pen: list[tuple[Polygon, tuple[int, int, int]]] = field(default_factory=list)
    border: tuple[int, int, int, int] | None = None

    @property
    def tumour(self) -> BaseGeometry:
        """Tumour area: union of the ``_0`` rings minus union of the ``_2`` rings."""
        outlines = shapely.union_all([Polygon(r) for r in self.tumour_outlines])
        holes = shapely.union_all([Polygon(r) for r in self.tumour_holes])
        return outlines.difference(holes)

    def tissue_rings(self) -> list[np.ndarray]:
        """Exterior and interior rings of the tissue, for even-odd filling."""
        return _rings(self.tissue)

    def follicle_rings(self) -> list[np.ndarray]:
        """Exterior and interior rings of the follicles, for even-odd filling."""
        return _rings(self.follicles)


def _rings(geom: MultiPolygon) -> list[np.ndarray]:
    rings = []
    for poly in geom.geoms:
        rings.append(np.asarray(poly.exterior.coords))
        rings.extend(np.asarray(i.coords) for i in poly.interiors)
    return rings


def _blob(
    rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 160
) -> Polygon:
    """An irregular star-shaped blob: a circle with random low harmonics,
    stretched up to 1.6x along a random direction."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for m in range(2, 8):
        r += rng.uniform(0.0, 0.28 / m) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
    r = np.maximum(r, 0.35) * radius
    stretch, angle = rng.uniform(1.0, 1.6), rng.uniform(0, np.pi)
    u, v = r * np.cos(theta) * stretch, r * np.sin(theta) / stretch
    ca, sa = math.cos(angle), math.sin(angle)
    return Polygon(np.stack([cx + u * ca - v * sa, cy + u * sa + v * ca], axis=1))


def _point_in(rng: np.random.Generator, area: BaseGeometry) -> tuple[float, float]:
    """A uniformly drawn point of a (non-empty) area."""
    x0, y0, x1, y1 = area.bounds
    for _ in range(1000):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if area.contains(shapely.points(x, y)):
            return float(x), float(y)
    point = area.representative_point()
    return float(point.x), float(point.y)


def _tissue(rng: np.random.Generator, width: int, height: int) -> MultiPolygon:
    """One to three tissue pieces inside a 7 % margin, with a few glass holes."""
    side = min(width, height)
    frame = box(0.07 * width, 0.07 * height, 0.93 * width, 0.93 * height)
    pieces: list[Polygon] = []
    count = int(rng.integers(1, 4))
    for attempt in range(60):
        if len(pieces) == count:
            break
        scale = 0.2 if not pieces else rng.uniform(0.09, 0.17)
        radius = scale * side * (1.0 - attempt / 80)
        x, y = _point_in(rng, frame.buffer(-radius))
        piece = _blob(rng, x, y, radius).intersection(frame)
        if all(piece.distance(p) > 0.03 * side for p in pieces):
            pieces.append(piece)

    with_holes = []
    for piece in pieces:
        holes = []
        for _ in range(int(rng.integers(0, 4))):
            radius = rng.uniform(0.03, 0.07) * math.sqrt(piece.area / math.pi)
            room = piece.buffer(-4 * radius)
            if not room.is_empty:
                x, y = _point_in(rng, room)
                holes.append(_blob(rng, x, y, radius, n=48))
        hole_area = shapely.union_all(holes) if holes else Polygon()
        with_holes.append(piece.difference(hole_area).simplify(0.5))
    return _as_multipolygon(shapely.union_all(with_holes))


def _as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    """Keep the polygon parts of a geometry, as a MultiPolygon."""
    parts = getattr(geom, "geoms", [geom])
    polys = [g for g in parts if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(polys)


def _tumour(rng: np.random.Generator, tissue: MultiPolygon, mpp: float) -> MultiPolygon:
    """One to three tumour regions inside the tissue, some with normal islands."""
    margin = 30.0 / mpp  # tumour stays 30 µm inside the tissue edge
    inner = tissue.buffer(-margin)
    regions = []
    for i in range(int(rng.integers(1, 4))):
        piece = max(inner.geoms if hasattr(inner, "geoms") else [inner], key=_area)
        piece_radius = math.sqrt(piece.area / math.pi)
        scale = rng.uniform(*(FIRST_TUMOUR_SCALE if i == 0 else OTHER_TUMOUR_SCALE))
        radius = max(scale * piece_radius, MIN_TUMOUR_RADIUS_UM / mpp)
        room = piece.buffer(-0.5 * radius)
        x, y = _point_in(rng, piece if room.is_empty else room)
        region = _blob(rng, x, y, radius, n=96).intersection(inner)
        if rng.uniform() < 0.5 and region.area > 0:
            # A normal island (ASAP group _2) well inside the tumour.
            island_radius = 0.25 * math.sqrt(region.area / math.pi)
            core = region.buffer(-1.6 * island_radius)
            if not core.is_empty:
                x, y = _point_in(rng, core)
                region = region.difference(_blob(rng, x, y, island_radius, n=48))
        regions.append(region)
    geom = shapely.union_all(regions).simplify(0.5)
    return _as_multipolygon(shapely.set_precision(geom, 0.01))


def _follicles(
    rng: np.random.Generator, tissue: MultiPolygon, tumour: BaseGeometry, mpp: float
) -> MultiPolygon:
    """A few dense normal regions inside the tissue, 30 µm clear of any tumour."""
    inner = tissue.buffer(-30.0 / mpp)
    pieces = list(getattr(inner, "geoms", [inner]))
    areas = np.array([p.area for p in pieces])
    if inner.is_empty or areas.sum() == 0:
        return MultiPolygon()
    keep_out = tumour.buffer(30.0 / mpp) if not tumour.is_empty else Polygon()
    regions = []
    for _ in range(int(rng.integers(FOLLICLES[0], FOLLICLES[1] + 1))):
        piece = pieces[int(rng.choice(len(pieces), p=areas / areas.sum()))]
        piece_radius = math.sqrt(piece.area / math.pi)
        radius = max(
            rng.uniform(*FOLLICLE_SCALE) * piece_radius, MIN_TUMOUR_RADIUS_UM / mpp
        )
        room = piece.buffer(-0.5 * radius)
        x, y = _point_in(rng, piece if room.is_empty else room)
        regions.append(_blob(rng, x, y, radius, n=64).intersection(inner))
    geom = shapely.union_all(regions).difference(keep_out).simplify(0.5)
    return _as_multipolygon(shapely.set_precision(geom, 0.01))


def _area(geom: BaseGeometry) -> float:
    return float(geom.area)


def _pen(
    rng: np.random.Generator, width: int, height: int, tissue: MultiPolygon, mpp: float
) -> list[tuple[Polygon, tuple[int, int, int]]]:
    """One or two marker strokes on the glass, at least 100 µm off the tissue."""
    keep_out = tissue.buffer(100.0 / mpp)
    slide = box(0, 0, width, height)
    strokes: list[tuple[Polygon, tuple[int, int, int]]] = []
    colour = PEN_COLOURS[int(rng.integers(len(PEN_COLOURS)))]
    count = int(rng.integers(1, 3))
    for _ in range(40):
        if len(strokes) == count:
            break
        stroke_width = rng.uniform(40.0, 90.0) / mpp
        length = rng.uniform(0.08, 0.25) * min(width, height)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        heading, step = rng.uniform(0, 2 * np.pi), length / 24
        points = [(x, y)]
        for _ in range(24):
            heading += rng.normal(0.0, 0.15)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            points.append((x, y))
        ink = LineString(points).buffer(stroke_width / 2, quad_segs=4)
        if slide.contains(ink) and not ink.intersects(keep_out):
            ink = shapely.set_precision(ink.simplify(0.5), 0.01)
            strokes.append((ink, colour))
    return strokes


def _border(
    rng: np.random.Generator, width: int, height: int
) -> tuple[int, int, int, int]:
    """A dark band along one slide edge, 1-3 % of the slide wide (inside the
    7 % margin the tissue keeps)."""
    side = int(rng.integers(4))
    if side in (0, 1):  # left, right
        band = int(rng.uniform(0.01, 0.03) * width)
        return (0, 0, band, height) if side == 0 else (width - band, 0, width, height)
    band = int(rng.uniform(0.01, 0.03) * height)
    return (0, 0, width, band) if side == 2 else (0, height - band, width, height)


def make_layout(
    seed: int, index: int, size: tuple[int, int], tumour: bool, mpp: float = 0.5
) -> SlideLayout:
    """Draw the geometry of synthetic slide ``index`` of the cohort ``seed``.

    Args:
        seed: Cohort seed.
        index: Slide index within the cohort.
        size: Level-0 ``(width, height)`` in px.
        tumour: Whether the slide carries tumour.
        mpp: Pixel size (µm/px).

    Returns:
        The slide's :class:`SlideLayout`.
    """
    width, height = size
    rng = np.random.default_rng([seed, index, 1])
    tissue = _tissue(rng, width, height)
    layout = SlideLayout(width, height, mpp, tissue)
    if tumour:
        for poly in _tumour(rng, tissue, mpp).geoms:
            layout.tumour_outlines.append(np.asarray(poly.exterior.coords))
            layout.tumour_holes.extend(np.asarray(r.coords) for r in poly.interiors)
    if rng.uniform() < PEN_PROBABILITY:
        layout.pen = _pen(rng, width, height, tissue, mpp)
    if rng.uniform() < BORDER_PROBABILITY:
        layout.border = _border(rng, width, height)
    # Their own stream: a slide's follicles do not depend on the draws above.
    follicle_rng = np.random.default_rng([seed, index, 3])
    layout.follicles = _follicles(follicle_rng, tissue, layout.tumour, mpp)
    return layout


def write_asap_xml(path: Path, layout: SlideLayout) -> None:
    """Write the tumour of a layout as ASAP XML (Camelyon16 style).

    Outlines go to group ``_0`` (tumour), holes to group ``_2`` (not tumour),
    coordinates in level-0 px with two decimals. Written to ``<path>.tmp`` and
    renamed.
    """
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    rings = [("_0", r) for r in layout.tumour_outlines]
    rings += [("_2", r) for r in layout.tumour_holes]
    for i, (group, ring) in enumerate(rings):
        ann = ET.SubElement(
            annotations,
            "Annotation",
            Name=f"Annotation {i}",
            Type="Polygon",
            PartOfGroup=group,
            Color="#F4FA58" if group == "_0" else "#64FE2E",
        )
        coords = ET.SubElement(ann, "Coordinates")
        pts = ring[:-1] if np.array_equal(ring[0], ring[-1]) else ring
        for order, (x, y) in enumerate(pts):
            ET.SubElement(
                coords, "Coordinate", Order=str(order), X=f"{x:.2f}", Y=f"{y:.2f}"
            )
    groups = ET.SubElement(root, "AnnotationGroups")
    for name, colour in (("_0", "#FF0000"), ("_2", "#00FF00")):
        element = ET.SubElement(
            groups, "Group", Name=name, PartOfGroup="None", Color=colour
        )
        ET.SubElement(element, "Attributes")
    ET.indent(root)
    tmp = path.with_name(path.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
