"""Read lesion annotations (ASAP XML, QuPath GeoJSON) into shapely geometry.

Every coordinate is a level-0 pixel ``(x, y)``, y downwards, as ASAP and QuPath
write them. The file format is chosen by content, not by extension:

- **ASAP XML** (CAMELYON16/17): ``<ASAP_Annotations>`` with ``Annotation`` elements
  (``Name``, ``Type``, ``PartOfGroup``) holding ``Coordinate X Y``. Decimal commas
  (``X="543,02"``, written by ASAP under some locales) are read as decimal points.
  Types: ``Polygon`` and ``Rectangle`` are areas; ``Spline`` is approximated by the
  polygon of its control points (a warning says so); ``Dot`` and ``PointSet`` are
  points and ``Measurement`` is a line: they never contribute area.
- **QuPath GeoJSON**: a FeatureCollection, a bare list of features, or a single
  Feature. Polygon/MultiPolygon (with holes) are areas, Point/MultiPoint points,
  LineString/MultiLineString lines. The class is ``classification.name``, or
  ``classification.names`` (a derived class such as ``["Tumor", "Positive"]`` reads
  as "Tumor: Positive" and maps like its first part, so it counts as tumour); a
  feature without classification is "Unclassified" (never tumour) with a warning.
  Detections/cells (``objectType`` detection/cell/tile) are not annotations and
  are skipped with one warning.
- **NCRF JSON** (CAMELYON16 lesions converted by baidu-research/NCRF):
  ``{"positive": [...], "negative": [...]}`` with ``vertices``; positive polygons
  are tumour, negative ones exclusion.
- Aperio **ImageScope XML** (root ``<Annotations>`` with ``Region``/``Vertex``) is
  refused with an :class:`~wsi_dram.errors.AnnotationError` that says so: its layers
  carry no class names that could be mapped reliably.

Groups (ASAP ``PartOfGroup``, QuPath class) become labels through a group map
(configuration, :data:`DEFAULT_GROUP_MAP` by default; lookups ignore case). The
tumour geometry is the union of the ``"tumor"`` label minus the union of the
``"exclusion"`` label, whatever the order in the file; other labels are kept in
``regions`` only.

ASAP group ``None`` (ASAP's name for "no group") maps to ``"exclusion"``: the
CAMELYON organisers' mask conversion paints ``_2``, ``Exclusion`` and ``None``
regions as non-tumour over the tumour groups, and reference masks must agree with
theirs. A file whose area annotations are all ungrouped therefore has no tumour;
a warning says so, and a group map with ``{"None": "tumor"}`` changes it.

Repairs and skips are never silent: invalid polygons are repaired with shapely
``make_valid`` and listed in ``repairs``, as are vertices outside the slide
(clipped); annotations with fewer than three distinct points, zero area or no
coordinates are skipped and listed in ``warnings`` with the file and annotation.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import (
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
    box,
    mapping,
)
from shapely.geometry.base import BaseGeometry

from wsi_dram.errors import AnnotationError

log = logging.getLogger(__name__)

TUMOR = "tumor"
EXCLUSION = "exclusion"

DEFAULT_GROUP_MAP: dict[str, str] = {
    "_0": TUMOR,
    "_1": TUMOR,
    "Tumor": TUMOR,
    "Tumour": TUMOR,
    "metastases": TUMOR,
    "_2": EXCLUSION,
    "Exclusion": EXCLUSION,
    "None": EXCLUSION,
}
"""Group (ASAP ``PartOfGroup`` or QuPath class) -> label. Matched ignoring case."""

LABEL_COLORS: dict[str, tuple[int, int, int]] = {
    TUMOR: (200, 0, 0),
    EXCLUSION: (0, 160, 0),
}

_AREA_TYPES = {"polygon", "rectangle", "spline"}
_POINT_TYPES = {"dot", "pointset"}
_LINE_TYPES = {"measurement"}
_SKIPPED_OBJECT_TYPES = {"detection", "cell", "tile"}


@dataclass
class Annotation:
    """One annotation after parsing.

    Attributes:
        name: its name in the file (ASAP ``Name``, QuPath ``name``/id).
        group: the group or class as written (``_0``, ``Tumor: Positive``).
        label: the label the group map gives (``tumor``, ``exclusion``, or the
            group itself when unmapped).
        kind: ``area``, ``points`` or ``line``.
        geometry: shapely geometry in level-0 px (MultiPolygon for areas).
        source_type: the type as written (``Polygon``, ``Dot``, ``MultiPolygon``).
        color: (r, g, b) from the file (ASAP ``Color``, QuPath ``colorRGB`` or
            ``color``), or None.
    """

    name: str
    group: str
    label: str
    kind: str
    geometry: BaseGeometry
    source_type: str
    color: tuple[int, int, int] | None = None


@dataclass
class AnnotationSet:
    """Everything read from one annotation file, in level-0 pixels.

    Attributes:
        path: the annotation file.
        format: ``asap``, ``qupath`` or ``ncrf``.
        annotations: the area annotations kept (after repairs and clipping).
        points: Dot/PointSet/Point annotations (never area).
        lines: Measurement/LineString annotations (never area).
        regions: union of the area annotations of each label.
        tumor: ``regions["tumor"]`` minus ``regions["exclusion"]`` (MultiPolygon,
            possibly empty), clipped to the slide when its size was given.
        polygons_per_group: number of area annotations kept per group as written.
        repairs: one line per repair (make_valid, clipping).
        warnings: one line per skipped or approximated annotation.
        slide_size: (w, h) of level 0 if given.
    """

    path: Path
    format: str
    annotations: list[Annotation] = field(default_factory=list)
    points: list[Annotation] = field(default_factory=list)
    lines: list[Annotation] = field(default_factory=list)
    regions: dict[str, MultiPolygon] = field(default_factory=dict)
    tumor: MultiPolygon = field(default_factory=MultiPolygon)
    polygons_per_group: dict[str, int] = field(default_factory=dict)
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    slide_size: tuple[int, int] | None = None

    @property
    def tumor_area_px(self) -> float:
        """Area of :attr:`tumor` in level-0 px²."""
        return float(self.tumor.area)

    @property
    def non_area(self) -> list[Annotation]:
        """Points and lines together, in file order of kind (points first)."""
        return self.points + self.lines

    def to_geojson(self) -> dict[str, Any]:
        """A QuPath-importable FeatureCollection of every annotation kept.

        Returns:
            GeoJSON dict; each feature has ``properties.objectType = "annotation"``,
            ``name``, and ``classification = {"name": group, "color": [r, g, b]}``;
            coordinates in level-0 px.
        """
        features = []
        for annotation in self.annotations + self.points + self.lines:
            color = annotation.color or LABEL_COLORS.get(
                annotation.label, (120, 120, 120)
            )
            features.append(
                {
                    "type": "Feature",
                    "geometry": mapping(annotation.geometry),
                    "properties": {
                        "objectType": "annotation",
                        "name": annotation.name,
                        "classification": {
                            "name": annotation.group,
                            "color": list(color),
                        },
                        "label": annotation.label,
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}


# -- parsing into raw items --------------------------------------------------------


@dataclass
class _Raw:
    """An annotation as read, before geometry checks."""

    name: str
    group: str
    kind: str  # area / points / line
    source_type: str
    polygons: list[tuple[list[tuple[float, float]], list[list[tuple[float, float]]]]]
    coords: list[tuple[float, float]] = field(default_factory=list)
    label: str | None = None  # fixed by the format (NCRF), else from the group map
    color: tuple[int, int, int] | None = None


def _hex_color(text: str | None) -> tuple[int, int, int] | None:
    """``#RRGGBB`` -> (r, g, b)."""
    if not text or len(text) != 7 or not text.startswith("#"):
        return None
    try:
        value = int(text[1:], 16)
    except ValueError:
        return None
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def _qupath_color(props: dict[str, Any]) -> tuple[int, int, int] | None:
    """QuPath colour: ``colorRGB`` (packed signed ARGB int) or ``color`` [r, g, b]."""
    value = props.get("classification")
    if not isinstance(value, dict):
        return None
    packed = value.get("colorRGB")
    if isinstance(packed, int):
        return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    rgb = value.get("color")
    if isinstance(rgb, list) and len(rgb) >= 3:
        try:
            r, g, b = (int(c) for c in rgb[:3])
        except (TypeError, ValueError):
            return None
        return r, g, b
    return None


def _number(text: str | None) -> float:
    if text is None:
        raise ValueError("missing")
    value = float(text.strip().replace(",", "."))
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_asap(root: ET.Element, path: Path, warnings: list[str]) -> list[_Raw]:
    items: list[_Raw] = []
    for index, element in enumerate(root.iter("Annotation")):
        name = element.get("Name") or f"Annotation {index}"
        group = element.get("PartOfGroup") or "None"
        source_type = element.get("Type") or "Polygon"
        kind_key = source_type.lower()
        where = f"{path.name}: annotation {name!r} ({source_type}, group {group})"
        coords_el = [c for c in element.iter("Coordinate")]
        coords_el.sort(key=lambda c: _order(c))
        try:
            coords = [(_number(c.get("X")), _number(c.get("Y"))) for c in coords_el]
        except ValueError as exc:
            warnings.append(f"{where}: unreadable coordinate ({exc}); skipped")
            continue
        if not coords:
            warnings.append(f"{where}: no coordinates; skipped")
            continue
        color = _hex_color(element.get("Color"))
        if kind_key in _POINT_TYPES:
            items.append(_Raw(name, group, "points", source_type, [], coords))
            items[-1].color = color
        elif kind_key in _LINE_TYPES:
            items.append(_Raw(name, group, "line", source_type, [], coords))
            items[-1].color = color
        elif kind_key in _AREA_TYPES:
            if kind_key == "rectangle" and len(coords) == 2:
                (x0, y0), (x1, y1) = coords
                coords = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            items.append(_Raw(name, group, "area", source_type, [(coords, [])]))
            items[-1].color = color
        else:
            warnings.append(f"{where}: unknown annotation type; skipped")
    return items


def _order(coordinate: ET.Element) -> float:
    try:
        return float(coordinate.get("Order", "0"))
    except ValueError:
        return 0.0


def _qupath_class(props: dict[str, Any]) -> str | None:
    value = props.get("classification")
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        if isinstance(value.get("names"), list) and value["names"]:
            return ": ".join(str(n) for n in value["names"])
        if isinstance(value.get("names"), str) and value["names"]:
            return value["names"]
        if value.get("name"):
            return str(value["name"])
    return None


def _ring(raw: Any) -> list[tuple[float, float]]:
    return [(float(p[0]), float(p[1])) for p in raw]


def _parse_geojson(data: Any, path: Path, warnings: list[str]) -> list[_Raw]:
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, list):
        features = data
    elif isinstance(data, dict) and (
        data.get("type") == "Feature" or "geometry" in data
    ):
        features = [data]
    else:
        raise AnnotationError(
            "not an annotation file: JSON that is neither a GeoJSON Feature, a "
            "FeatureCollection, a list of features, nor NCRF positive/negative",
            path,
        )
    items: list[_Raw] = []
    skipped_objects: Counter[str] = Counter()
    for index, feature in enumerate(features):
        if not isinstance(feature, dict):
            warnings.append(f"{path.name}: feature {index} is not an object; skipped")
            continue
        props = feature.get("properties") or {}
        object_type = str(props.get("objectType") or feature.get("id") or "").lower()
        object_type = object_type.removeprefix("path").removesuffix("object")
        if object_type in _SKIPPED_OBJECT_TYPES:
            skipped_objects[object_type] += 1
            continue
        name = str(props.get("name") or feature.get("id") or f"feature {index}")
        group = _qupath_class(props)
        if group is None:
            group = "Unclassified"
            warnings.append(
                f"{path.name}: annotation {name!r} has no classification; read as "
                "'Unclassified' (not tumour)"
            )
        geometry = feature.get("geometry") or {}
        if not isinstance(geometry, dict):
            warnings.append(
                f"{path.name}: {name!r}: geometry is not an object; skipped"
            )
            continue
        parts = _geojson_geometry(geometry, name, group, path, warnings)
        for part in parts:
            part.color = _qupath_color(props)
        items.extend(parts)
    for object_type, count in skipped_objects.items():
        warnings.append(
            f"{path.name}: {count} QuPath {object_type} object(s) skipped "
            "(only annotations are read)"
        )
    return items


def _geojson_geometry(
    geometry: dict[str, Any], name: str, group: str, path: Path, warnings: list[str]
) -> list[_Raw]:
    kind = str(geometry.get("type", ""))
    coords = geometry.get("coordinates")
    where = f"{path.name}: annotation {name!r} ({kind or 'no geometry'}, class {group})"
    try:
        if kind == "Polygon":
            rings = [_ring(r) for r in coords or []]
            if not rings:
                raise ValueError("no rings")
            return [_Raw(name, group, "area", kind, [(rings[0], rings[1:])])]
        if kind == "MultiPolygon":
            polygons = []
            for part in coords or []:
                rings = [_ring(r) for r in part]
                if rings:
                    polygons.append((rings[0], rings[1:]))
            if not polygons:
                raise ValueError("no polygons")
            return [_Raw(name, group, "area", kind, polygons)]
        if kind in ("Point", "MultiPoint"):
            points = [coords] if kind == "Point" else list(coords or [])
            return [_Raw(name, group, "points", kind, [], _ring(points))]
        if kind == "LineString":
            return [_Raw(name, group, "line", kind, [], _ring(coords or []))]
        if kind == "MultiLineString":
            return [
                _Raw(name, group, "line", kind, [], _ring(line))
                for line in coords or []
            ]
        if kind == "GeometryCollection":
            out: list[_Raw] = []
            for part in geometry.get("geometries") or []:
                out.extend(_geojson_geometry(part, name, group, path, warnings))
            return out
    except (TypeError, ValueError, IndexError) as exc:
        warnings.append(f"{where}: unreadable coordinates ({exc}); skipped")
        return []
    warnings.append(f"{where}: unsupported geometry type; skipped")
    return []


def _parse_ncrf(data: dict[str, Any], path: Path, warnings: list[str]) -> list[_Raw]:
    items: list[_Raw] = []
    for key in ("positive", "negative"):
        entries = data.get(key) or []
        if not isinstance(entries, list):
            raise AnnotationError(
                f"NCRF {key!r} must be a list of polygons, got "
                f"{type(entries).__name__}",
                path,
            )
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                warnings.append(f"{path.name}: {key} {index} is not an object; skipped")
                continue
            name = str(entry.get("name") or f"{key} {index}")
            try:
                ring = _ring(entry.get("vertices") or [])
            except (TypeError, ValueError, IndexError) as exc:
                warnings.append(f"{path.name}: {name!r}: unreadable vertices ({exc})")
                continue
            label = TUMOR if key == "positive" else EXCLUSION
            items.append(_Raw(name, key, "area", "Polygon", [(ring, [])], [], label))
    return items


# -- geometry --------------------------------------------------------------------


def _dedupe(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop consecutive repeated vertices and a closing vertex equal to the first."""
    out: list[tuple[float, float]] = []
    for point in ring:
        if not out or point != out[-1]:
            out.append(point)
    if len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out


def _polygonal(geometry: BaseGeometry) -> MultiPolygon:
    """The polygonal part of any geometry, as a MultiPolygon."""
    if geometry.is_empty:
        return MultiPolygon()
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    if isinstance(geometry, MultiPolygon):
        return geometry
    parts: list[Polygon] = []
    for part in getattr(geometry, "geoms", []):
        parts.extend(_polygonal(part).geoms)
    return MultiPolygon(parts)


def _union(geometries: list[BaseGeometry]) -> MultiPolygon:
    if not geometries:
        return MultiPolygon()
    return _polygonal(shapely.union_all(geometries))


def _build_area(
    raw: _Raw, where: str, warnings: list[str], repairs: list[str]
) -> MultiPolygon | None:
    polygons: list[Polygon] = []
    for shell, holes in raw.polygons:
        shell = _dedupe(shell)
        if len(shell) < 3:
            warnings.append(
                f"{where}: {len(shell)} distinct point(s), a polygon needs at least "
                "3; skipped"
            )
            continue
        holes = [h for h in (_dedupe(h) for h in holes) if len(h) >= 3]
        polygons.append(Polygon(shell, holes))
    if not polygons:
        return None
    geometry: BaseGeometry = (
        polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    )
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        repaired = _polygonal(shapely.make_valid(geometry))
        if repaired.area > 0:
            repairs.append(
                f"{where}: invalid polygon ({reason}) repaired with make_valid "
                f"(area {repaired.area:.1f} px²)"
            )
        geometry = repaired
    geometry = _polygonal(geometry)
    if geometry.area <= 0:
        warnings.append(f"{where}: zero area (collinear or degenerate); skipped")
        return None
    return geometry


def _clip(
    geometry: BaseGeometry,
    slide: Polygon | None,
    coords: list[tuple[float, float]],
    where: str,
    size: tuple[int, int] | None,
    repairs: list[str],
) -> BaseGeometry:
    if slide is None or size is None:
        return geometry
    w, h = size
    outside = sum(1 for x, y in coords if not (0 <= x <= w and 0 <= y <= h))
    if outside == 0:
        return geometry
    repairs.append(
        f"{where}: {outside} vertex/vertices outside the {w}x{h} slide; clipped"
    )
    return geometry.intersection(slide)


def _assemble(
    items: list[_Raw],
    result: AnnotationSet,
    group_map: dict[str, str],
) -> None:
    size = result.slide_size
    slide = box(0, 0, size[0], size[1]) if size else None
    lowered = {k.lower(): v for k, v in group_map.items()}
    path = result.path
    per_label: dict[str, list[BaseGeometry]] = {}
    none_group = 0

    for raw in items:
        label = raw.label or lowered.get(raw.group.lower())
        if label is None:
            label = lowered.get(raw.group.split(":")[0].strip().lower(), raw.group)
        where = (
            f"{path.name}: annotation {raw.name!r} ({raw.source_type}, "
            f"group {raw.group})"
        )
        if raw.kind == "area":
            geometry = _build_area(raw, where, result.warnings, result.repairs)
            if geometry is None:
                continue
            if raw.source_type.lower() == "spline":
                result.warnings.append(
                    f"{where}: spline approximated by the polygon of its "
                    f"{len(raw.polygons[0][0])} control points"
                )
            all_coords = [p for shell, holes in raw.polygons for p in shell]
            geometry = _polygonal(
                _clip(geometry, slide, all_coords, where, size, result.repairs)
            )
            if geometry.is_empty:
                result.warnings.append(f"{where}: entirely outside the slide; skipped")
                continue
            result.annotations.append(
                Annotation(
                    raw.name,
                    raw.group,
                    label,
                    "area",
                    geometry,
                    raw.source_type,
                    raw.color,
                )
            )
            per_label.setdefault(label, []).append(geometry)
            count = result.polygons_per_group.get(raw.group, 0)
            result.polygons_per_group[raw.group] = count + 1
            if raw.group == "None" and label == EXCLUSION:
                none_group += 1
            continue

        coords = raw.coords
        if raw.kind == "line" and len(_dedupe(coords)) < 2:
            result.warnings.append(f"{where}: a line needs 2 distinct points; skipped")
            continue
        shape: BaseGeometry
        if raw.kind == "points":
            shape = Point(coords[0]) if len(coords) == 1 else MultiPoint(coords)
        else:
            shape = LineString(coords)
        shape = _clip(shape, slide, coords, where, size, result.repairs)
        if shape.is_empty:
            result.warnings.append(f"{where}: entirely outside the slide; skipped")
            continue
        if isinstance(shape, (MultiLineString,)) or raw.kind == "line":
            target = result.lines
        else:
            target = result.points
        target.append(
            Annotation(
                raw.name, raw.group, label, raw.kind, shape, raw.source_type, raw.color
            )
        )

    result.regions = {label: _union(g) for label, g in per_label.items()}
    tumor = result.regions.get(TUMOR, MultiPolygon())
    exclusion = result.regions.get(EXCLUSION)
    if exclusion is not None and not tumor.is_empty:
        tumor = _polygonal(tumor.difference(exclusion))
    result.tumor = tumor
    if none_group and TUMOR not in result.regions:
        result.warnings.append(
            f"{path.name}: {none_group} annotation(s) in ASAP group 'None' count as "
            "exclusion (CAMELYON convention), so the file has no tumour; map 'None' "
            "to 'tumor' in the group map if they are lesions"
        )


# -- entry points ----------------------------------------------------------------


def read_annotations(
    path: str | Path,
    slide_size: tuple[int, int] | None = None,
    group_map: dict[str, str] | None = None,
) -> AnnotationSet:
    """Read an ASAP XML, QuPath GeoJSON or NCRF JSON annotation file.

    Args:
        path: the annotation file; its format is recognised from its content.
        slide_size: level-0 (width, height); when given, geometry is clipped to
            the slide and every clipped annotation is listed in ``repairs``.
        group_map: group/class -> label (``"tumor"``, ``"exclusion"`` or any other
            name); :data:`DEFAULT_GROUP_MAP` when None. Matched ignoring case.

    Returns:
        The parsed :class:`AnnotationSet`.

    Raises:
        AnnotationError: the file is missing, not valid XML/JSON, or not an
            annotation format this reader understands (ImageScope XML included).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"cannot read annotation file ({exc})", path) from exc
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    warnings: list[str] = []
    if head == b"<":
        fmt, items = _read_xml(data, path, warnings)
    elif head in (b"{", b"["):
        fmt, items = _read_json(data, path, warnings)
    else:
        raise AnnotationError(
            "not an annotation file: expected ASAP XML or QuPath GeoJSON", path
        )
    result = AnnotationSet(path=path, format=fmt, slide_size=slide_size)
    result.warnings.extend(warnings)
    _assemble(items, result, DEFAULT_GROUP_MAP if group_map is None else group_map)
    for line in result.warnings:
        log.warning("%s", line)
    for line in result.repairs:
        log.info("repair: %s", line)
    return result


def _read_xml(data: bytes, path: Path, warnings: list[str]) -> tuple[str, list[_Raw]]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise AnnotationError(f"broken XML ({exc})", path) from exc
    if root.tag == "ASAP_Annotations":
        return "asap", _parse_asap(root, path, warnings)
    if root.tag == "Annotations" and root.find(".//Region") is not None:
        raise AnnotationError(
            "looks like Aperio ImageScope XML (root <Annotations> with "
            "Region/Vertex elements), which wsi-dram does not read; export the "
            "annotations as ASAP XML or QuPath GeoJSON",
            path,
        )
    raise AnnotationError(
        f"not an annotation file: XML root <{root.tag}>, expected <ASAP_Annotations>",
        path,
    )


def _read_json(data: bytes, path: Path, warnings: list[str]) -> tuple[str, list[_Raw]]:
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"broken JSON ({exc})", path) from exc
    if isinstance(parsed, dict) and ("positive" in parsed or "negative" in parsed):
        return "ncrf", _parse_ncrf(parsed, path, warnings)
    return "qupath", _parse_geojson(parsed, path, warnings)


ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")


def find_annotation(slide_id: str, folder: str | Path) -> Path | None:
    """The annotation file of a slide in a folder, matched by file stem.

    Tries ``<slide_id>.xml``, ``.geojson``, ``.json`` in that order, then the same
    names ignoring case (``Tumor_001.xml`` for ``tumor_001``).

    Args:
        slide_id: the slide's file stem.
        folder: the folder of annotation files.

    Returns:
        The path, or None when the slide has no annotation there.

    Raises:
        AnnotationError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError("annotation folder does not exist", folder)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = folder / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for suffix in ANNOTATION_SUFFIXES:
        match = by_name.get(f"{slide_id}{suffix}".lower())
        if match is not None:
            return match
    return None
