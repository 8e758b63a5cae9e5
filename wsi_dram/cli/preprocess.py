"""``wsi-dram preprocess``: slides -> OME-Zarr cache, tile grids, manifest, QC."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

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

from wsi_dram.cache.manifest import ManifestRow
from wsi_dram.cache.store import CODECS
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
        DataError: For a missing path or a glob that matches nothing.
    """
    out: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            out.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file()
                    and not p.name.startswith(".")
                    and p.suffix.lower() in SLIDE_SUFFIXES
                )
            )
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
            2, "--workers", min=1, help="Threads (threaded scheduler)."
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
            None, "--mpp", help="Micrometres per pixel for slides whose file lacks it."
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
    ) -> None:
        """Cache slides as tissue-only OME-Zarr pyramids (+ labels, tiles, QC)."""
        from wsi_dram.cache.preprocess import PreprocessOptions, preprocess

        if codec not in CODECS:
            raise ConfigError(f"--codec {codec!r}: choose one of {', '.join(CODECS)}")
        if annotations is not None and not annotations.is_dir():
            raise DataError("annotation folder not found", annotations)
        files = expand_slides(slides)
        console = Console(stderr=True)
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
            group_map=parse_group_map(group_map),
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bars:
            rows = preprocess(
                files,
                cache,
                annotations,
                options,
                scheduler,
                _RichProgress(bars, len(files)),
            )
        Console().print(summary_table(rows))
        failed = sum(r.status == "failed" for r in rows)
        if failed:
            console.print(
                f"[red]{failed} of {len(rows)} slide(s) failed[/] "
                f"(see {cache / 'manifest.csv'})"
            )
            raise typer.Exit(1)
