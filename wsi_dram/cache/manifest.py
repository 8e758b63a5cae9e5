"""The cohort manifest ``CACHE/manifest.csv``: one row per slide, rewritten atomically.

Columns: slide_id, source, status (``done``, ``failed``, ``skipped``), error, width,
height, mpp (µm/px), levels, tissue_mm2, tumour_mm2, tiles, seconds. A new run
updates the rows of the slides it saw and keeps the others.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from wsi_dram.cache.store import MANIFEST_NAME
from wsi_dram.errors import DataError

STATUSES = ("done", "failed", "skipped")


@dataclass
class ManifestRow:
    """One slide's outcome.

    Attributes:
        slide_id: Source file stem.
        source: Source slide path.
        status: ``done``, ``failed`` or ``skipped`` (complete and unchanged).
        error: One-line reason when failed, else empty.
        width: Level-0 width in pixels (0 when unknown).
        height: Level-0 height in pixels.
        mpp: Micrometres per level-0 pixel (0 when unknown).
        levels: Cache pyramid levels.
        tissue_mm2: Tissue area in mm².
        tumour_mm2: Annotated tumour area in mm² (0 without annotation).
        tiles: Tiles in the tile grid.
        seconds: Wall time spent on the slide in this run.
    """

    slide_id: str
    source: str
    status: str
    error: str = ""
    width: int = 0
    height: int = 0
    mpp: float = 0.0
    levels: int = 0
    tissue_mm2: float = 0.0
    tumour_mm2: float = 0.0
    tiles: int = 0
    seconds: float = 0.0


COLUMNS = [f.name for f in fields(ManifestRow)]


def manifest_path(cache_dir: str | Path) -> Path:
    """``cache_dir/manifest.csv``."""
    return Path(cache_dir) / MANIFEST_NAME


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest (empty list when the file does not exist).

    Raises:
        DataError: When a row has a missing column or a malformed number.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for n, rec in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append(
                    ManifestRow(
                        slide_id=rec["slide_id"],
                        source=rec["source"],
                        status=rec["status"],
                        error=rec.get("error") or "",
                        width=int(rec["width"] or 0),
                        height=int(rec["height"] or 0),
                        mpp=float(rec["mpp"] or 0),
                        levels=int(rec["levels"] or 0),
                        tissue_mm2=float(rec["tissue_mm2"] or 0),
                        tumour_mm2=float(rec["tumour_mm2"] or 0),
                        tiles=int(rec["tiles"] or 0),
                        seconds=float(rec["seconds"] or 0),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(
                    f"line {n}: malformed manifest row ({exc})", path
                ) from exc
    return rows


def write_manifest(path: str | Path, rows: list[ManifestRow]) -> None:
    """Write ``rows`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _write_rows(tmp, rows)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # the previous manifest stays as it was
        raise


def _write_rows(tmp: Path, rows: list[ManifestRow]) -> None:
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            rec = asdict(row)
            rec["error"] = " ".join(str(rec["error"]).split())
            rec["mpp"] = f"{row.mpp:.6g}"
            rec["tissue_mm2"] = f"{row.tissue_mm2:.4f}"
            rec["tumour_mm2"] = f"{row.tumour_mm2:.4f}"
            rec["seconds"] = f"{row.seconds:.2f}"
            writer.writerow(rec)


def update_manifest(cache_dir: str | Path, rows: list[ManifestRow]) -> Path:
    """Merge ``rows`` into the cache's manifest by slide_id (new rows appended)."""
    path = manifest_path(cache_dir)
    merged = {r.slide_id: r for r in read_manifest(path)}
    for row in rows:
        merged[row.slide_id] = row
    write_manifest(path, list(merged.values()))
    return path
