"""``wsi-dram preprocess``: slides -> OME-Zarr cache, tile grids, manifest, QC."""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from wsi_dram.cache.manifest import ManifestRow
from wsi_dram.cache.store import CODECS
from wsi_dram.cli.console import make_console
from wsi_dram.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: File suffixes taken as slides when a folder is named (OpenSlide's formats and
#: plain images); explicit files and globs are taken whatever their suffix.
SLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide"}
    | {".bif", ".dcm", ".png", ".jpg", ".jpeg"}
)


def expand_slides(patterns: list[str]) -> list[Path]:
    """Files named by ``patterns`` (paths, globs, or folders: their slide files).

    A DICOM slide is one series spread over several ``.dcm`` files in one folder,
    and OpenSlide opens it from any of them, so only the first ``.dcm`` file of
    each folder is kept (one DICOM slide per folder).

    Raises:
        DataError: For a missing path, a glob that matches nothing, or a folder
            with no slide file in it.
    """
    out: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if not found:
                raise DataError(
                    "no slide files in this folder (looked for "
                    f"{', '.join(sorted(SLIDE_SUFFIXES))})",
                    pattern,
                )
            out.extend(found)
        elif path.exists():
            out.append(path)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
            if not matches:
                raise DataError("no slide matches this pattern", pattern)
            out.extend(matches)
        else:
            raise DataError("no such slide file", pattern)
    return _one_per_dicom_folder(out)


def _one_per_dicom_folder(files: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    kept: list[Path] = []
    for path in files:
        if path.suffix.lower() == ".dcm":
            folder = path.resolve().parent
            if folder in seen:
                log.info("%s: same DICOM series as an earlier file; skipped", path)
                continue
            seen.add(folder)
        kept.append(path)
    return kept


def unannotated(files: list[Path], folder: Path) -> list[str]:
    """Ids of the slides with no annotation file in ``folder``.

    Raises:
        DataError: When not one slide has an annotation there (a wrong folder or
            names that do not match the slide file stems).
    """
    from wsi_dram.slides.annotations import find_annotation

    missing = [f.stem for f in files if find_annotation(f.stem, folder) is None]
    if files and len(missing) == len(files):
        raise DataError(
            f"no annotation file matches any of the {len(files)} slide(s) "
            f"(looked for <slide id>.xml, .geojson or .json, e.g. "
            f"{files[0].stem}.xml); check the folder or drop --annotations",
            folder,
        )
    return missing


#: Plausible range of ``--mpp`` (µm/px): below it, a typo such as a missing
#: decimal point; above it, not a microscope image.
MPP_RANGE = (1e-3, 1e4)


def check_options(
    mpp: float | None, chunk: int, block: int, workers: int, min_side: int
) -> None:
    """Refuse impossible ``preprocess`` options before any slide is opened.

    Args:
        mpp: ``--mpp`` in µm/px, or None.
        chunk: ``--chunk`` in pixels.
        block: ``--block`` in pixels (a multiple of ``chunk``).
        workers: ``--workers``, threads.
        min_side: ``--min-side`` in pixels.

    Raises:
        ConfigError: The first bad option, named with its value.
    """
    from wsi_dram.cache.pyramid import check_alignment

    if mpp is not None:
        low, high = MPP_RANGE
        if not math.isfinite(mpp) or mpp <= 0:
            raise ConfigError(
                f"--mpp {mpp:g}: must be a finite positive number of micrometres "
                "per pixel (e.g. 0.25 for a 40x scan, 0.5 for 20x)"
            )
        if not low <= mpp <= high:
            raise ConfigError(
                f"--mpp {mpp:g}: implausible pixel size; give micrometres per pixel "
                f"between {low:g} and {high:g} (e.g. 0.25 for a 40x scan)"
            )
    for name, value in (
        ("--chunk", chunk),
        ("--block", block),
        ("--workers", workers),
        ("--min-side", min_side),
    ):
        if value < 1:
            raise ConfigError(f"{name} {value}: must be at least 1")
    check_alignment(block, chunk)


def parse_group_map(items: list[str]) -> dict[str, str] | None:
    """``["Tumor=tumor", "_2=exclusion"]`` -> dict (None when empty)."""
    mapping: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            name, sep, label = part.partition("=")
            if not sep or not name.strip() or not label.strip():
                raise ConfigError(f"--group-map entry {part!r} is not GROUP=LABEL")
            mapping[name.strip()] = label.strip()
    return mapping or None


class _RichProgress:
    def __init__(self, progress: Progress, total_slides: int) -> None:
        self.progress = progress
        self.overall: TaskID = progress.add_task("slides", total=total_slides)
        self.current: TaskID | None = None

    def slide_started(self, slide_id: str, blocks: int) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(f"  {slide_id}", total=max(blocks, 1))

    def block_done(self) -> None:
        if self.current is not None:
            self.progress.advance(self.current)

    def slide_finished(self, row: ManifestRow) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        self.progress.advance(self.overall)


def summary_table(rows: list[ManifestRow]) -> Table:
    """The per-slide outcome table with a totals line."""
    table = Table(title="preprocess summary")
    for col, justify in [
        ("slide", "left"),
        ("status", "left"),
        ("levels", "right"),
        ("tissue mm²", "right"),
        ("tumour mm²", "right"),
        ("tiles", "right"),
        ("s", "right"),
        ("reason", "left"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    colour = {"done": "green", "skipped": "cyan", "failed": "red"}
    for r in rows:
        table.add_row(
            r.slide_id,
            f"[{colour[r.status]}]{r.status}[/]",
            str(r.levels),
            f"{r.tissue_mm2:.2f}",
            f"{r.tumour_mm2:.2f}",
            str(r.tiles),
            f"{r.seconds:.1f}",
            r.error,
        )
    counts = {
        s: sum(r.status == s for r in rows) for s in ("done", "skipped", "failed")
    }
    table.add_section()
    table.add_row(
        "total",
        " / ".join(f"{n} {s}" for s, n in counts.items()),
        "",
        f"{sum(r.tissue_mm2 for r in rows):.2f}",
        f"{sum(r.tumour_mm2 for r in rows):.2f}",
        str(sum(r.tiles for r in rows)),
        f"{sum(r.seconds for r in rows):.1f}",
        "",
    )
    return table


def register(app: typer.Typer) -> None:
    """Add the ``preprocess`` command to ``app``."""

    @app.command("preprocess")
    def preprocess_cmd(
        slides: list[str] = typer.Argument(..., help="Slide files, globs or folders."),
        cache: Path = typer.Option(..., "--cache", help="Cache folder to write."),
        annotations: Path | None = typer.Option(
            None,
            "--annotations",
            help="Folder of annotation files named like the slides.",
        ),
        workers: int = typer.Option(
            2, "--workers", help="Threads (threaded scheduler)."
        ),
        scheduler: str | None = typer.Option(
            None,
            "--scheduler",
            help="dask.distributed scheduler address (tcp://host:port).",
        ),
        codec: str = typer.Option(
            "zstd",
            "--codec",
            help=(
                f"Chunk codec ({' | '.join(CODECS)}). zstd: lossless, opens in every "
                "OME-Zarr viewer, decodes fastest. jpeg: about 7x smaller and 2x "
                "faster to write, but lossy, 1.3x slower to decode, and readable "
                "only where wsi-dram is installed."
            ),
        ),
        force: bool = typer.Option(
            False, "--force", help="Rebuild complete caches too."
        ),
        mpp: float | None = typer.Option(
            None,
            "--mpp",
            help=(
                "Micrometres per pixel for slides whose file lacks it (slides "
                "with their own keep it)."
            ),
        ),
        group_map: list[str] = typer.Option(
            [],
            "--group-map",
            help="Annotation group to label, GROUP=LABEL (repeatable).",
        ),
        chunk: int = typer.Option(512, "--chunk", help="Zarr chunk side (px)."),
        block: int = typer.Option(
            1024, "--block", help="Write task side (px), multiple of chunk."
        ),
        min_side: int = typer.Option(
            1000,
            "--min-side",
            metavar="PX",
            show_default=False,
            help=(
                "Stop adding levels when the long side is below this (default 1000)."
            ),
        ),
    ) -> None:
        """Cache slides as tissue-only OME-Zarr pyramids (+ labels, tiles, QC)."""
        from wsi_dram.cache.preprocess import (
            PreprocessOptions,
            cache_lock,
            connect_scheduler,
            preprocess,
        )

        if codec not in CODECS:
            raise ConfigError(f"--codec {codec!r}: choose one of {', '.join(CODECS)}")
        check_options(mpp, chunk, block, workers, min_side)
        if annotations is not None and not annotations.is_dir():
            raise DataError("annotation folder not found", annotations)
        files = expand_slides(slides)
        console = make_console(stderr=True)
        if annotations is not None:
            missing = unannotated(files, annotations)
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                console.print(
                    f"[yellow]warning:[/] {len(missing)} of {len(files)} slide(s) "
                    f"have no annotation in {annotations} (cached without one): "
                    f"{shown}"
                )
        options = PreprocessOptions(
            chunk=chunk,
            block=block,
            codec=codec,
            workers=workers,
            force=force,
            mpp=mpp,
            min_side=min_side,
            group_map=parse_group_map(group_map),
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        # lock and connect before the bars, so a refusal is one line on its own
        with cache_lock(cache):
            client = None if scheduler is None else connect_scheduler(scheduler)
            try:
                with Progress(*columns, console=console, transient=False) as bars:
                    rows = preprocess(
                        files,
                        cache,
                        annotations,
                        options,
                        client,
                        _RichProgress(bars, len(files)),
                    )
            finally:
                if client is not None:
                    client.close()
        make_console().print(summary_table(rows))
        failed = sum(r.status == "failed" for r in rows)
        if failed:
            console.print(
                f"[red]{failed} of {len(rows)} slide(s) failed[/] "
                f"(see {cache / 'manifest.csv'})"
            )
            raise typer.Exit(1)
