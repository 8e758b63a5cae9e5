"""``wsi-dram synth``: write a synthetic cohort (slides, ASAP XML, labels.csv)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from wsi_dram.cli.console import make_console
from wsi_dram.slides.tiff_writer import COMPRESSIONS
from wsi_dram.synth import SynthSlide, make_cohort


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    slides: int = typer.Option(8, "--slides", min=1, help="Number of slides."),
    size: tuple[int, int] = typer.Option(
        (16384, 12288),
        "--size",
        help="Level-0 WIDTH HEIGHT in px (each 1024 to 250000).",
    ),
    seed: int = typer.Option(0, "--seed", help="Cohort seed (same seed, same files)."),
    mpp: float = typer.Option(0.5, "--mpp", help="Pixel size in µm/px."),
    tumour_fraction: float = typer.Option(
        0.5, "--tumour-fraction", help="Fraction of slides with tumour."
    ),
    compression: str = typer.Option(
        "jpeg",
        "--compression",
        help=f"TIFF tiles: {', '.join(COMPRESSIONS)} (deflate = zlib).",
    ),
    quality: int = typer.Option(90, "--quality", min=1, max=100, help="JPEG quality."),
    workers: int = typer.Option(0, "--workers", min=0, help="Threads (0: all cores)."),
) -> None:
    """Write N synthetic H&E-like slides with tumour outlines and labels.

    Tumour differs from normal tissue only at high magnification (larger, paler,
    crowded nuclei with the same mean colour): it is visible at pyramid levels
    0-2 and invisible from level 3 (8x) on at 0.5 µm/px.
    """
    console = make_console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("slides", total=slides)

        def advance(_: SynthSlide) -> None:
            progress.advance(task)

        written = make_cohort(
            out,
            slides=slides,
            size=size,
            seed=seed,
            tumour_fraction=tumour_fraction,
            mpp=mpp,
            compression=compression,
            quality=quality,
            workers=workers or None,
            progress=advance,
        )

    table = Table(title=f"synthetic cohort in {out}")
    for column in ("slide", "label", "size", "levels", "tissue mm²", "tumour mm²"):
        table.add_column(column)
    table.add_column("pen / border")
    mm2 = (mpp / 1000.0) ** 2
    for s in written:
        table.add_row(
            s.slide_id,
            str(s.label),
            f"{s.width} x {s.height}",
            str(len(s.levels)),
            f"{s.tissue_area_px * mm2:.2f}",
            f"{s.tumour_area_px * mm2:.3f}",
            f"{'pen' if s.pen else '-'} / {'border' if s.border else '-'}",
        )
    make_console().print(table)


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to the app."""
    app.command("synth")(synth)
