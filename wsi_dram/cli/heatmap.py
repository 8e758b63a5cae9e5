"""``wsi-dram heatmap``: tumour heatmaps of slides in pathologists' formats."""

from __future__ import annotations

import glob
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from wsi_dram.cli.console import make_console
from wsi_dram.errors import ConfigError, DataError
from wsi_dram.export import ALL_FORMATS

if TYPE_CHECKING:
    from wsi_dram.export.run import HeatmapRow

_OUTPUT_NAMES = {
    "png": "png",
    "glimpses_png": "glimpses",
    "glimpses_gif": "gif",
    "geojson": "geojson",
    "xml": "xml",
    "tiff": "tiff",
    "lesions": "lesions",
    "label": "label",
}


def parse_formats(text: str) -> list[str]:
    """``"png,tiff"`` -> ``["png", "tiff"]`` ("all": every format).

    Raises:
        ConfigError: An unknown or empty format list.
    """
    if text.strip() == "all":
        return list(ALL_FORMATS)
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"--formats {text!r}: choose from {','.join(ALL_FORMATS)} or all"
        )
    return formats


def expand_sources(sources: Sequence[str]) -> list[Path]:
    """Cache stores and slide files named by ``sources``, in order.

    An existing ``*.ome.zarr`` folder is a cache store and kept as it is; the
    rest go through :func:`wsi_dram.cli.preprocess.expand_slides` as for
    ``wsi-dram preprocess`` (paths, globs, folders of slide files; a DICOM
    series counts once). A folder or glob also gives the cache stores in it or
    matched by it. A path named twice is scored once.

    Raises:
        DataError: A missing path, a glob that matches nothing, or a folder
            with neither slide files nor cache stores.
    """
    from wsi_dram.cli.preprocess import expand_slides
    from wsi_dram.export.run import is_store

    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if is_store(path):
            found.append(path)
            continue
        stores: list[Path] = []
        if path.is_dir():
            stores = [p for p in path.iterdir() if is_store(p)]
        elif not path.exists() and glob.has_magic(source):
            stores = [Path(p) for p in glob.glob(source) if is_store(p)]
        try:
            files = expand_slides([source])
        except DataError:
            if not stores:
                raise
            files = []
        if path.is_dir() and not files and not stores:
            raise DataError("no slide file or cache store in this folder", path)
        found.extend(sorted([*files, *stores]))
    # One DICOM file per series across all sources (expand_slides keeps the
    # first of each folder), and every path once.
    slide_files = {str(p) for p in found if not is_store(p)}
    kept = set(expand_slides(sorted(slide_files))) if slide_files else set()
    seen: set[Path] = set()
    out: list[Path] = []
    for path in found:
        key = path.resolve()
        if key in seen or (not is_store(path) and path not in kept):
            continue
        seen.add(key)
        out.append(path)
    return out


def summary_table(rows: Sequence[HeatmapRow]) -> Table:
    """Slide, status, score, fields, tissue read, outputs, seconds, reason."""
    table = Table(title="heatmap summary", expand=False)
    for col, justify in [
        ("slide", "left"),
        ("status", "left"),
        ("score", "right"),
        ("fields", "right"),
        ("tissue read", "right"),
        ("outputs", "left"),
        ("s", "right"),
        ("reason", "left"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        done = r.status == "done"
        table.add_row(
            r.slide_id,
            "[green]done[/]" if done else "[red]failed[/]",
            f"{r.score:.3f}" if r.score is not None else "",
            str(r.fields) if done else "",
            f"{100 * r.pixels_read_fraction:.3f}%" if done else "",
            ",".join(_OUTPUT_NAMES.get(k, k) for k in r.outputs),
            f"{r.seconds:.1f}",
            r.error,
        )
    failed = sum(r.status == "failed" for r in rows)
    table.add_section()
    table.add_row(
        "total",
        f"{len(rows) - failed} done / {failed} failed",
        "",
        str(sum(r.fields for r in rows)),
        "",
        "",
        f"{sum(r.seconds for r in rows):.1f}",
        "",
    )
    return table


class _Bars:
    """Rich bars: slides overall, and the current slide's stage."""

    def __init__(self, progress: Progress, slides: int) -> None:
        self.progress = progress
        self.overall: TaskID = progress.add_task("slides", total=slides)
        self.current: TaskID | None = None
        self.slide: str | None = None

    def __call__(self, slide_id: str, stage: str, done: int, total: int) -> None:
        if slide_id != self.slide:
            if self.current is not None:
                self.progress.remove_task(self.current)
                self.progress.advance(self.overall)
            self.slide = slide_id
            self.current = self.progress.add_task(f"  {slide_id}", total=1)
        assert self.current is not None
        self.progress.update(
            self.current,
            description=f"  {slide_id} {stage}",
            completed=done,
            total=max(total, 1),
        )

    def finish(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.progress.update(self.overall, completed=self.progress.tasks[0].total)


def register(app: typer.Typer) -> None:
    """Add the ``heatmap`` command to ``app``."""

    @app.command("heatmap")
    def heatmap_cmd(
        sources: list[str] = typer.Argument(
            ...,
            help="Cache stores (*.ome.zarr), slide files, globs or folders.",
        ),
        checkpoint: Path = typer.Option(
            ..., "--checkpoint", help="A slide-task checkpoint (.pt)."
        ),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        stride: int | None = typer.Option(
            None,
            "--stride",
            min=1,
            help="Level-0 px between scored fields, at most the field size "
            "(default: the checkpoint's).",
        ),
        formats: str = typer.Option(
            ",".join(ALL_FORMATS), "--formats", help="Outputs to write, or all."
        ),
        threshold: float = typer.Option(
            0.5,
            "--threshold",
            min=0.0,
            max=1.0,
            help="Probability of tumour polygons and lesion candidates.",
        ),
        cache: Path | None = typer.Option(
            None, "--cache", help="Cache for slide files (default: OUT/cache)."
        ),
        glimpse_fields: int = typer.Option(
            4, "--glimpse-fields", min=0, help="Fields whose glimpse paths are drawn."
        ),
        no_label: bool = typer.Option(
            False, "--no-label", help="Do not store labels/heatmap in the cache."
        ),
    ) -> None:
        """Score slides with a model and write heatmaps for QuPath, ASAP and eyes.

        Per slide, into OUT: SLIDE.heatmap.png, SLIDE.glimpses.png/.gif,
        SLIDE.geojson (QuPath), SLIDE.xml (ASAP), SLIDE.heatmap.tif (pyramidal,
        slide extent and mpp), SLIDE.lesions.csv; and labels/heatmap in the
        slide's cache. A failed slide is reported and the others go on; the exit
        code is 1 when any slide failed. Outputs are named by slide id, so a
        later source with the id of an earlier one fails (naming both). A slide
        file without a pixel size: cache it with `wsi-dram preprocess --mpp`
        first and give its store here.
        """
        from wsi_dram.export.run import (
            check_writable,
            heatmap_slides,
            is_store,
            load_heatmap_model,
        )

        chosen = parse_formats(formats)
        slides = expand_sources(sources)
        # The checkpoint first: a bad one leaves no output folder behind.
        model = load_heatmap_model(checkpoint, stride)
        check_writable(out)
        if cache is not None and any(not is_store(p) for p in slides):
            check_writable(cache, "cache folder")
        console = make_console(stderr=True)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            bars = _Bars(progress, len(slides))
            rows = heatmap_slides(
                slides,
                model,
                out,
                formats=chosen,
                threshold=threshold,
                cache_dir=cache,
                glimpse_fields=glimpse_fields,
                store_label=not no_label,
                progress=bars,
            )
            bars.finish()
        for row in rows:
            if row.status == "failed":
                console.print(f"[red]failed[/] {row.slide_id}: {row.error}")
        Console(width=max(make_console().width, 120)).print(summary_table(rows))
        console.print(f"outputs in {out}")
        if any(r.status == "failed" for r in rows):
            sys.exit(1)
