"""``wsi-dram info`` and ``wsi-dram annotations``: inspect slides and annotations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import shapely
import typer
from rich.markup import escape
from rich.table import Table

from wsi_dram.cli.console import make_console
from wsi_dram.errors import ConfigError
from wsi_dram.jsontext import strict_json
from wsi_dram.slides.annotations import DEFAULT_GROUP_MAP, AnnotationSet


def json_text(data: Any) -> str:
    """``data`` as strict JSON: non-finite floats (NaN, ±Infinity), which JSON
    cannot express, become ``null``."""
    return strict_json(data, indent=2)


def info_command(
    slide: Path = typer.Argument(..., help="Slide file (any format OpenSlide reads)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    mpp: float | None = typer.Option(
        None, "--mpp", help="Micrometres per pixel, overriding the file's value."
    ),
) -> None:
    """Show a slide's vendor, size, levels (with exact factors), mpp and images."""
    from wsi_dram.slides.reader import open_slide, slide_info

    with open_slide(slide, mpp=mpp) as opened:
        data = slide_info(opened)
    if as_json:
        typer.echo(json_text(data))
        return

    console = make_console()
    summary = Table(title=f"{data['slide_id']}", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("path", data["path"])
    summary.add_row("vendor", data["vendor"])
    summary.add_row("size (level 0)", f"{data['width']} x {data['height']} px")
    summary.add_row(
        "mpp (x, y)",
        escape(f"{data['mpp']:.6g}, {data['mpp_y']:.6g} µm/px [{data['mpp_source']}]"),
    )
    power = data["objective_power"]
    summary.add_row("objective", "-" if power is None else f"{power:g}x")
    images = data["associated_images"]
    summary.add_row(
        "associated images",
        ", ".join(f"{k} {v[0]}x{v[1]}" if v else k for k, v in images.items()) or "-",
    )
    console.print(summary)

    levels = Table(title="levels")
    for column in ("level", "width", "height", "downsample", "exact factor"):
        levels.add_column(column, justify="right")
    for level in data["levels"]:
        factor = level["factor"]
        levels.add_row(
            str(level["level"]),
            str(level["width"]),
            str(level["height"]),
            f"{level['downsample']:.6g}",
            "none" if factor is None else str(factor),
        )
    console.print(levels)


def _parse_groups(items: list[str]) -> dict[str, str] | None:
    if not items:
        return None
    mapping = dict(DEFAULT_GROUP_MAP)
    for item in items:
        group, sep, label = item.partition("=")
        if not sep or not group.strip() or not label.strip():
            raise ConfigError(f"--group expects GROUP=LABEL, got {item!r}")
        mapping[group.strip()] = label.strip()
    return mapping


def annotation_summary(result: AnnotationSet) -> dict[str, Any]:
    """JSON-ready summary of an annotation file (``wsi-dram annotations --json``).

    Args:
        result: a parsed annotation set.

    Returns:
        Keys ``path``, ``format``, ``slide_size``, ``tumor_area_px``,
        ``polygons_per_group``, ``regions`` (label -> area px²), ``annotations``,
        ``non_area``, ``repairs``, ``warnings``, ``tumor`` (GeoJSON geometry bounds).
    """
    return {
        "path": str(result.path),
        "format": result.format,
        "slide_size": list(result.slide_size) if result.slide_size else None,
        "tumor_area_px": result.tumor_area_px,
        "tumor_bounds": None if result.tumor.is_empty else list(result.tumor.bounds),
        "polygons_per_group": result.polygons_per_group,
        "regions": {label: geom.area for label, geom in result.regions.items()},
        "annotations": [
            {
                "name": a.name,
                "group": a.group,
                "label": a.label,
                "type": a.source_type,
                "area_px": a.geometry.area,
            }
            for a in result.annotations
        ],
        "non_area": [
            {
                "name": a.name,
                "group": a.group,
                "type": a.source_type,
                "kind": a.kind,
                "points": int(shapely.get_num_coordinates(a.geometry)),
            }
            for a in result.non_area
        ],
        "repairs": result.repairs,
        "warnings": result.warnings,
    }


def annotations_command(
    file: Path = typer.Argument(..., help="ASAP XML, QuPath GeoJSON or NCRF JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    slide_size: tuple[int, int] | None = typer.Option(
        None,
        "--slide-size",
        help="Level-0 width and height: clip to the slide and report clipping.",
    ),
    group: list[str] = typer.Option(
        [],
        "--group",
        help="GROUP=LABEL added to the default group map (label tumor, exclusion "
        "or any name); repeatable. Default: _0/_1/Tumor/metastases -> tumor, "
        "_2/Exclusion/None -> exclusion.",
    ),
) -> None:
    """Parse an annotation file: polygons per group, repairs, warnings, tumour area.

    ImageScope XML is not read (a clear error says so). ASAP group "None" counts as
    exclusion, as in the CAMELYON organisers' conversion; change it with
    --group None=tumor.
    """
    from wsi_dram.slides.annotations import read_annotations

    if slide_size is not None and min(slide_size) < 1:
        raise ConfigError(
            f"--slide-size {slide_size[0]} {slide_size[1]}: width and height are "
            "level-0 pixels and must be at least 1"
        )
    size = (int(slide_size[0]), int(slide_size[1])) if slide_size else None
    # The tables below list every warning; keep the library's log lines quiet.
    logger = logging.getLogger("wsi_dram.slides.annotations")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        result = read_annotations(file, slide_size=size, group_map=_parse_groups(group))
    finally:
        logger.setLevel(previous)
    data = annotation_summary(result)
    if as_json:
        typer.echo(json_text(data))
        return

    console = make_console()
    table = Table(title=f"{result.path.name} ({result.format})")
    table.add_column("group")
    table.add_column("label")
    table.add_column("area annotations", justify="right")
    table.add_column("area (px²)", justify="right")
    labels = {a.group: a.label for a in result.annotations}
    for name, count in result.polygons_per_group.items():
        area = sum(a.geometry.area for a in result.annotations if a.group == name)
        label = labels.get(name, "-")
        table.add_row(escape(name), escape(label), str(count), f"{area:,.0f}")
    console.print(table)
    console.print(f"tumour area: {result.tumor_area_px:,.0f} px² (level 0)")
    if result.non_area:
        other = Table(title="non-area annotations (never tumour)")
        for column in ("name", "group", "type", "kind"):
            other.add_column(column)
        for a in result.non_area:
            other.add_row(escape(a.name), escape(a.group), a.source_type, a.kind)
        console.print(other)
    for line in result.repairs:
        console.print(f"[yellow]repair[/yellow] {escape(line)}", highlight=False)
    for line in result.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(line)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``info`` and ``annotations`` to the CLI."""
    app.command("info")(info_command)
    app.command("annotations")(annotations_command)
