"""A synthetic cohort of slides: pyramidal TIFFs, ASAP XML tumour outlines, labels.

``make_cohort(out, slides=N, size=(W, H), seed=S)`` writes, in ``out``:

- ``synth_000.tif`` ... : tiled pyramidal JPEG TIFFs (OpenSlide ``generic-tiff``,
  ``openslide.mpp-x`` set), levels by exact factors of two;
- ``synth_XXX.xml`` for each tumour slide: ASAP XML with group ``_0`` (tumour
  outlines) and ``_2`` (normal islands or glass holes inside them), level-0 px;
- ``labels.csv``: ``slide_id,label`` (1 tumour, 0 normal).

The same seed gives byte-identical files. Exactly ``round(N * tumour_fraction)``
slides carry tumour, chosen by the seed.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_dram.errors import DataError, make_dir
from wsi_dram.slides.tiff_writer import COMPRESSIONS, write_pyramidal_tiff
from wsi_dram.synth.layout import make_layout, write_asap_xml
from wsi_dram.synth.render import SlideRenderer

log = logging.getLogger(__name__)

# Smallest slide side (px) that leaves room for tissue, tumour and margins.
MIN_SIDE = 1024
# Largest slide side (px): real whole-slide images stay under about 200k px a side;
# a typo such as 1000000 would otherwise start a terabyte-scale write.
MAX_SIDE = 250_000


@dataclass(frozen=True)
class SynthSlide:
    """One written synthetic slide.

    Attributes:
        slide_id: File stem, e.g. ``synth_007``.
        path: The pyramidal TIFF.
        annotation: The ASAP XML, or None for a normal slide.
        label: 1 tumour, 0 normal.
        width: Level-0 width (px).
        height: Level-0 height (px).
        mpp: Pixel size (µm/px).
        levels: ``(width, height)`` of every level written.
        tissue_area_px: Tissue area in level-0 px².
        tumour_area_px: Tumour area (``_0`` minus ``_2``) in level-0 px².
        pen: Whether the slide has pen marks.
        border: Whether the slide has a dark border band.
        detail_levels: Levels ``0 .. detail_levels - 1`` show nuclei (and so
            tumour); coarser levels show the mean colour only.
    """

    slide_id: str
    path: Path
    annotation: Path | None
    label: int
    width: int
    height: int
    mpp: float
    levels: list[tuple[int, int]]
    tissue_area_px: float
    tumour_area_px: float
    pen: bool
    border: bool
    detail_levels: int


def tumour_slides(slides: int, seed: int, tumour_fraction: float) -> set[int]:
    """Indices of the slides that carry tumour: ``round(slides * fraction)`` of
    them, drawn by the seed."""
    count = int(round(slides * tumour_fraction))
    order = np.random.default_rng([seed, 0xC0]).permutation(slides)
    return {int(i) for i in order[:count]}


def make_slide(
    out: Path,
    slide_id: str,
    index: int,
    size: tuple[int, int],
    seed: int,
    tumour: bool,
    mpp: float = 0.5,
    compression: str = "jpeg",
    quality: int = 90,
    tile: int = 256,
    min_size: int = 256,
    workers: int | None = None,
) -> SynthSlide:
    """Write one synthetic slide (``<slide_id>.tif`` and, if tumour, ``.xml``).

    Args:
        out: Output folder (must exist).
        slide_id: File stem.
        index: Slide index: with ``seed``, determines everything on the slide.
        size: Level-0 ``(width, height)`` in px.
        seed: Cohort seed.
        tumour: Whether to place tumour.
        mpp: Pixel size (µm/px).
        compression: TIFF compression (see :func:`write_pyramidal_tiff`).
        quality: JPEG quality.
        tile: TIFF tile side (px).
        min_size: Levels are added while the long side exceeds this (px).
        workers: Render/encode threads (default: all cores).

    Returns:
        The :class:`SynthSlide` written.
    """
    layout = make_layout(seed, index, size, tumour, mpp)
    renderer = SlideRenderer(layout, seed, index)
    path = out / f"{slide_id}.tif"
    description = f"wsi-dram synthetic slide {slide_id} (seed {seed}, index {index})"
    levels = write_pyramidal_tiff(
        path,
        size[0],
        size[1],
        renderer,
        mpp=mpp,
        tile=tile,
        compression=compression,
        quality=quality,
        min_size=min_size,
        description=description,
        workers=workers,
    )
    annotation = None
    if tumour:
        annotation = out / f"{slide_id}.xml"
        write_asap_xml(annotation, layout)
    return SynthSlide(
        slide_id=slide_id,
        path=path,
        annotation=annotation,
        label=int(tumour),
        width=size[0],
        height=size[1],
        mpp=mpp,
        levels=levels,
        tissue_area_px=float(layout.tissue.area),
        tumour_area_px=float(layout.tumour.area) if tumour else 0.0,
        pen=bool(layout.pen),
        border=layout.border is not None,
        detail_levels=renderer.detail_levels,
    )


def make_cohort(
    out: Path,
    slides: int,
    size: tuple[int, int],
    seed: int = 0,
    tumour_fraction: float = 0.5,
    mpp: float = 0.5,
    compression: str = "jpeg",
    quality: int = 90,
    tile: int = 256,
    min_size: int = 256,
    prefix: str = "synth",
    workers: int | None = None,
    progress: Callable[[SynthSlide], None] | None = None,
) -> list[SynthSlide]:
    """Write a synthetic cohort of ``slides`` slides and its ``labels.csv``.

    Args:
        out: Output folder (created if missing).
        slides: Number of slides.
        size: Level-0 ``(width, height)`` of every slide (px), each in
            ``[MIN_SIDE, MAX_SIDE]`` (1024 to 250,000).
        seed: Cohort seed; the same seed gives the same files.
        tumour_fraction: Fraction of slides with tumour (rounded to a count).
        mpp: Pixel size (µm/px); nuclei keep their size in micrometres.
        compression: One of :data:`COMPRESSIONS`: ``"jpeg"``, ``"zlib"`` (or
            its other name ``"deflate"``) or ``"none"``.
        quality: JPEG quality.
        tile: TIFF tile side (px).
        min_size: Levels are added while the long side exceeds this (px).
        prefix: Slide id prefix (ids are ``<prefix>_000``, ...).
        workers: Render/encode threads (default: all cores).
        progress: Called with each slide once it is written.

    Returns:
        The slides written, in id order.

    Raises:
        DataError: On a size, count, fraction, mpp or compression that cannot
            make a cohort (checked before anything is written).
    """
    out = Path(out)
    if slides < 1:
        raise DataError(f"need at least one slide, got {slides}", out)
    if min(size) < MIN_SIDE:
        raise DataError(f"slide size {size} too small; each side must be >= {MIN_SIDE}")
    if max(size) > MAX_SIDE:
        raise DataError(
            f"slide size {size} too large; each side must be <= {MAX_SIDE} px "
            "(the largest real slides are about 200,000 px a side)"
        )
    if not 0.0 <= tumour_fraction <= 1.0:
        raise DataError(f"tumour fraction must be in [0, 1], got {tumour_fraction}")
    if not 0.05 <= mpp <= 10.0:
        raise DataError(f"mpp must be in [0.05, 10] µm/px, got {mpp}")
    if compression not in COMPRESSIONS:
        raise DataError(
            f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}"
        )
    make_dir(out)

    digits = max(3, len(str(slides - 1)))
    with_tumour = tumour_slides(slides, seed, tumour_fraction)
    written = []
    for index in range(slides):
        slide_id = f"{prefix}_{index:0{digits}d}"
        slide = make_slide(
            out, slide_id, index, size, seed, index in with_tumour, mpp,
            compression, quality, tile, min_size, workers,
        )  # fmt: skip
        log.info("wrote %s (label %d)", slide.path, slide.label)
        written.append(slide)
        if progress is not None:
            progress(slide)

    labels = out / "labels.csv"
    tmp = labels.with_name(labels.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "label"])
        writer.writerows((s.slide_id, s.label) for s in written)
    tmp.replace(labels)
    return written
