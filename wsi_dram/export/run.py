"""Slide heatmaps with a trained model: what ``wsi-dram heatmap`` runs.

For one slide, :func:`heatmap_slide`:

1. finds its cache: a ``<slide_id>.ome.zarr`` store is opened as it is; a slide
   file is first cached into ``cache_dir`` (default ``<out_dir>/cache``) by
   :func:`wsi_dram.cache.preprocess.preprocess`, unless a complete store of the
   same unchanged file (size and content hash) is already there;
2. scores it with :func:`wsi_dram.evaluation.scoring.score_slide`: square fields
   of the model's ``field_size`` on a grid ``stride`` level-0 px apart over the
   tissue, the learned policy's mean path (one path per field);
3. writes the outputs of :func:`wsi_dram.export.export_all` into ``out_dir``
   (``<slide_id>.heatmap.png``, ``.glimpses.png``/``.gif``, ``.geojson``,
   ``.xml``, ``.heatmap.tif``, ``.lesions.csv``) and the NGFF label
   ``labels/heatmap`` into the slide's cache. The glimpse pictures show the
   paths on the ``glimpse_fields`` highest-scoring fields.

Nothing holds a full-resolution canvas: the model reads glimpses, the TIFF is
written tile by tile, the PNGs are drawn on a thumbnail (the finest cache level
whose long side is at most :data:`THUMBNAIL_SIDE`). :func:`heatmap_slides` runs
a batch in which a bad slide fails alone with a one-line reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wsi_dram.errors import (
    CacheError,
    CheckpointError,
    ConfigError,
    SlideError,
    WsiDramError,
)
from wsi_dram.evaluation.scoring import ScoringOptions, SlideScores, score_slide
from wsi_dram.export import ALL_FORMATS, GlimpsePath, export_all

log = logging.getLogger(__name__)

#: Task kinds whose checkpoints score slides (RGB fields, tumour = class 1).
SLIDE_KINDS = ("slide_regions", "slide")
#: Long side (px) of the thumbnail the PNG pictures are drawn on, at most.
THUMBNAIL_SIDE = 1600
STORE_SUFFIX = ".ome.zarr"

#: ``progress(stage, done, total)``; stages "preprocess", "score", "export".
Progress = Callable[[str, int, int], None]


@dataclass
class HeatmapModel:
    """A model ready to score slides, with the grid it scores them on.

    Attributes:
        model: A :class:`~wsi_dram.model.dram.DRAM` (or any module with its
            ``config`` and ``forward(sensor, sample, policy, generator)``),
            two classes, tumour = class 1, 3 channels.
        options: Field size, stride, tissue share, aggregation, batch size.
        name: Where it came from (the checkpoint path), for messages.
        device: Where the model runs.
    """

    model: Any
    options: ScoringOptions
    name: str = "model"
    device: str = "cpu"

    @property
    def levels_needed(self) -> int:
        """Cache levels a glimpse reads: ``base_level + scales``."""
        return int(self.options.base_level + self.model.config.scales)

    def with_stride(self, stride: int | None) -> HeatmapModel:
        """This model scoring on a grid ``stride`` level-0 px apart (None: same).

        Raises:
            ConfigError: When ``stride`` is not positive, or larger than a field
                (the grid would leave gaps).
        """
        if stride is None:
            return self
        if stride < 1:
            raise ConfigError(f"--stride must be a positive number of px, got {stride}")
        if not self.options.whole_slide and stride > self.options.field_size:
            raise ConfigError(
                f"--stride {stride} px is larger than the model's fields "
                f"({self.options.field_size} px): the fields would leave tissue "
                f"between them unread; use at most {self.options.field_size}"
            )
        return replace(self, options=replace(self.options, stride=int(stride)))


def load_heatmap_model(
    checkpoint: str | Path, stride: int | None = None, device: str = "cpu"
) -> HeatmapModel:
    """Load a slide checkpoint for heatmaps.

    The grid comes from the checkpoint's ``[task.options]`` (``field_size``,
    ``score_stride``, ``score_min_tissue``, ``aggregate``, ``top_k``,
    ``base_level``, ``eval_batch_size``); heatmaps always use the field grid,
    also for a whole-slide (``kind = "slide"``) model.

    Args:
        checkpoint: A ``.pt`` file written by ``wsi-dram train``.
        stride: Level-0 px between field origins (None: the checkpoint's
            ``score_stride``, or its ``field_size`` when that is 0).
        device: Where the model runs.

    Raises:
        CheckpointError: Unreadable, or not a two-class RGB slide model.
        ConfigError: A bad ``stride``.
    """
    from wsi_dram.data.slide_tasks import SlideTaskOptions
    from wsi_dram.data.tasks import task_options
    from wsi_dram.evaluation.scoring import options_from_task
    from wsi_dram.training.checkpoints import load_model

    path = Path(checkpoint)
    model, config, payload = load_model(path, device)
    kind = config.task.kind
    if kind not in SLIDE_KINDS or int(payload["channels"]) != 3:
        raise CheckpointError(
            f"trained on task kind {kind!r} with {payload['channels']} channel(s); "
            f"heatmaps need a slide model (kind {' or '.join(SLIDE_KINDS)})",
            path,
        )
    if int(payload["num_classes"]) != 2:
        raise CheckpointError("heatmaps need a two-class (normal, tumour) model", path)
    try:
        opts = task_options(config.task, SlideTaskOptions)
    except ConfigError as exc:
        raise CheckpointError(f"stored task options: {exc.reason}", path) from exc
    loaded = HeatmapModel(model, options_from_task(opts), str(path), str(device))
    return loaded.with_stride(stride)


@dataclass
class HeatmapResult:
    """One slide's heatmap run.

    Attributes:
        slide_id: The slide.
        outputs: Output kind -> path (see :func:`wsi_dram.export.export_all`).
        scores: What scoring produced (grid, glimpses, pixels read, score).
        cache: The slide's ``.ome.zarr`` store.
        seconds: Wall time of the slide (preprocessing included).
    """

    slide_id: str
    outputs: dict[str, Path]
    scores: SlideScores
    cache: Path
    seconds: float


@dataclass
class HeatmapRow:
    """One line of a batch (:func:`heatmap_slides`), done or failed.

    Attributes:
        slide_id: The slide (the source's stem when it could not be opened).
        source: The slide file or cache store given.
        status: ``done`` or ``failed``.
        error: One-line reason when failed, else empty.
        score: Slide score (None when failed).
        fields: Fields scored.
        pixels_read_fraction: Level-0 tissue px read / tissue px.
        outputs: Output kind -> path.
        seconds: Wall time of the slide.
    """

    slide_id: str
    source: str
    status: str
    error: str = ""
    score: float | None = None
    fields: int = 0
    pixels_read_fraction: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def is_store(source: str | Path) -> bool:
    """True for an existing ``*.ome.zarr`` folder (a cache store, not a slide)."""
    path = Path(source)
    return path.name.endswith(STORE_SUFFIX) and path.is_dir()


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` and prove it writable.

    Raises:
        WsiDramError: One line naming the folder, e.g. when it lies under a
            regular file or is read-only.
    """
    path = Path(folder)
    probe = path / f".wsi_dram_write_test.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WsiDramError(
            f"{what} is not writable ({exc.strerror or exc})", path
        ) from exc
    return path


def slide_id_of(source: str | Path) -> str:
    """The slide id of a slide file (its stem) or a store (name minus suffix)."""
    name = Path(source).name
    if name.endswith(STORE_SUFFIX):
        return name[: -len(STORE_SUFFIX)]
    return Path(name).stem


def _reusable(store: Path, source: Path) -> bool:
    """True when ``store`` is a complete cache of the unchanged ``source``."""
    from wsi_dram.cache.preprocess import source_signature
    from wsi_dram.cache.store import is_complete, read_project_attrs

    if not is_complete(store):
        return False
    cached = (read_project_attrs(store) or {}).get("source") or {}
    now = source_signature(source)
    return cached.get("size") == now["size"] and cached.get("hash") == now["hash"]


def _min_side(
    source: Path, levels: int, default: int = 1000, mpp: float | None = None
) -> int:
    """The preprocess ``min_side`` that gives a small slide ``levels`` levels
    (``mpp``: a pixel size for opening a file without one; sizes ignore it)."""
    from wsi_dram.cache.store import level_count_for
    from wsi_dram.slides.reader import open_slide

    with open_slide(source, mpp=mpp) as slide:
        width, height = slide.width, slide.height
    side = default
    while side > 16 and level_count_for(width, height, side) < levels:
        side //= 2
    return side


def resolve_cache(
    source: str | Path,
    cache_dir: str | Path,
    levels: int = 1,
    progress: Progress | None = None,
) -> Path:
    """The cache store of a slide file or store, preprocessing a file if needed.

    Args:
        source: A ``.ome.zarr`` store, or a slide file.
        cache_dir: Where a slide file is cached.
        levels: Pyramid levels the model needs (small slides get a smaller
            ``min_side`` so they have them).
        progress: Told ("preprocess", 0/1, 1) around preprocessing.

    Returns:
        The store path (not yet opened).

    Raises:
        SlideError: A missing source, or a slide that failed preprocessing.
    """
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
    from wsi_dram.cache.store import store_path

    path = Path(source)
    if not path.exists():
        raise SlideError("no such slide file or cache store", path)
    if path.is_dir():
        return path
    store = store_path(cache_dir, path.stem)
    if _reusable(store, path):
        log.info("%s: reusing the complete cache %s", path.name, store)
        return store
    if progress is not None:
        progress("preprocess", 0, 1)
    from wsi_dram.slides.reader import PixelSizeUnknown

    try:
        min_side = _min_side(path, levels)
    except PixelSizeUnknown as exc:  # heatmap has no --mpp: name what works
        side = _min_side(path, levels, mpp=1.0)
        extra = "" if side == 1000 else f" --min-side {side}"
        raise SlideError(
            "pixel size unknown (the file has no openslide.mpp-x property); cache "
            f"it first with `wsi-dram preprocess {path} --mpp X{extra} --cache DIR` "
            f"(X in micrometres per pixel), then give DIR/{path.stem}{STORE_SUFFIX} "
            "to heatmap",
            path,
        ) from exc
    options = PreprocessOptions(min_side=min_side)
    (row,) = preprocess([path], cache_dir, None, options)
    if row.status == "failed":
        raise SlideError(f"preprocessing failed: {row.error}", path)
    if progress is not None:
        progress("preprocess", 1, 1)
    return store


def pick_thumbnail(slide: Any, side: int = THUMBNAIL_SIDE) -> tuple[np.ndarray, float]:
    """The finest cache level whose long side is at most ``side`` px.

    Returns:
        RGB (h, w, 3) uint8 and its level-0 px per px (the coarsest level when
        none is that small).
    """
    level = slide.level_count - 1
    while level > 0:
        _, h, w = slide.levels[level - 1].shape
        if max(h, w) > side:
            break
        level -= 1
    _, h, w = slide.levels[level].shape
    return slide.read_region(0, 0, level, w, h), float(2**level)


def glimpse_paths(scores: SlideScores, scales: int, fields: int) -> list[GlimpsePath]:
    """Glimpse paths of the ``fields`` highest-scoring fields, best first.

    Each path has the field's T glimpse centres (level-0 ``(x, y)``) and the K
    window sides ``glimpse_side * 2**k`` (level-0 px).
    """
    if fields <= 0 or len(scores.field_probabilities) == 0:
        return []
    order = np.argsort(-scores.field_probabilities, kind="stable")[:fields]
    sizes = [float(scores.glimpse_side * 2**k) for k in range(scales)]
    return [GlimpsePath(scores.glimpses[i], sizes) for i in order]


def run_heatmap(
    source: str | Path,
    model: HeatmapModel | str | Path,
    out_dir: str | Path,
    stride: int | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    threshold: float = 0.5,
    cache_dir: str | Path | None = None,
    glimpse_fields: int = 4,
    store_label: bool = True,
    progress: Progress | None = None,
) -> HeatmapResult:
    """Score one slide and write its heatmap outputs (see the module docstring).

    Args:
        source: A slide file or its ``.ome.zarr`` cache store.
        model: A loaded :class:`HeatmapModel` or a checkpoint path.
        out_dir: Output folder (created).
        stride: Level-0 px between field origins (None: the model's).
        formats: Any of :data:`wsi_dram.export.ALL_FORMATS`.
        threshold: Probability at or above which cells become polygons and
            lesion candidates.
        cache_dir: Where slide files are cached (default ``out_dir/cache``).
        glimpse_fields: Fields whose glimpse paths are drawn.
        store_label: Also store the heatmap as ``labels/heatmap`` in the cache.
        progress: ``progress(stage, done, total)``.

    Returns:
        The :class:`HeatmapResult`.

    Raises:
        WsiDramError: A missing or broken slide/cache, a bad checkpoint or
            option (one-line message naming the file).
    """
    from wsi_dram.cache.store import open_cache

    t0 = time.perf_counter()
    unknown = sorted(set(formats) - set(ALL_FORMATS))
    if unknown:
        raise ConfigError(
            f"unknown format(s) {', '.join(unknown)}; choose from "
            f"{', '.join(ALL_FORMATS)}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    scorer = model if isinstance(model, HeatmapModel) else load_heatmap_model(model)
    scorer = scorer.with_stride(stride)
    out = Path(out_dir)
    cache_root = Path(cache_dir) if cache_dir is not None else out / "cache"

    store = resolve_cache(source, cache_root, scorer.levels_needed, progress)
    slide = open_cache(store)
    if slide.level_count < scorer.levels_needed:
        raise CacheError(
            f"cache has {slide.level_count} level(s) but the model reads levels "
            f"{scorer.options.base_level}..{scorer.levels_needed - 1}; "
            f"preprocess it again with a smaller --min-side",
            store,
        )
    score_progress = None
    if progress is not None:

        def score_progress(done: int, total: int) -> None:
            progress("score", done, total)

    scores = score_slide(
        scorer.model,
        slide,
        scorer.options,
        policy="learned",
        device=scorer.device,
        progress=score_progress,
    )
    if len(scores.fields) == 0:
        # A score of 0 from no field would read as a confident "no tumour".
        raise SlideError(
            f"no field with enough tissue to score (min_tissue "
            f"{scorer.options.min_tissue:g} of a field); the slide is too small "
            f"for fields of {scorer.options.field_size} px or has too little tissue",
            store,
        )
    log.info(
        "%s: %d fields, score %.3f, %.3f%% of tissue px read",
        slide.slide_id,
        len(scores.fields),
        scores.score,
        100 * scores.pixels_read_fraction,
    )

    if progress is not None:
        progress("export", 0, 1)
    pictures = {"png", "glimpses"} & set(formats)
    thumbnail, downsample = pick_thumbnail(slide) if pictures else (None, 1.0)
    paths = glimpse_paths(scores, scorer.model.config.scales, glimpse_fields)
    outputs = export_all(
        scores.to_heatmap(),
        out,
        thumbnail,
        downsample,
        slide.tissue_geometry,
        glimpses=paths or None,
        formats=formats,
        threshold=threshold,
        cache_store=store if store_label else None,
        lesions=scores.lesions(threshold, scorer.options.lesion_merge_um),
    )
    if progress is not None:
        progress("export", 1, 1)
    return HeatmapResult(
        slide.slide_id, outputs, scores, store, time.perf_counter() - t0
    )


def heatmap_slide(
    source: str | Path,
    model: HeatmapModel | str | Path,
    out_dir: str | Path,
    stride: int | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    threshold: float = 0.5,
    cache_dir: str | Path | None = None,
    glimpse_fields: int = 4,
    store_label: bool = True,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Score one slide and write its heatmap outputs; see :func:`run_heatmap`.

    Returns:
        Output kind -> path: ``png``, ``glimpses_png``, ``glimpses_gif``,
        ``geojson``, ``xml``, ``tiff``, ``lesions``, ``label`` (the store).
    """
    return run_heatmap(
        source,
        model,
        out_dir,
        stride,
        formats,
        threshold,
        cache_dir,
        glimpse_fields,
        store_label,
        progress,
    ).outputs


def one_line(exc: BaseException) -> str:
    """A one-line reason for a failed slide."""
    from wsi_dram.errors import WsiDramError

    text = str(exc) if isinstance(exc, WsiDramError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def heatmap_slides(
    sources: Sequence[str | Path],
    model: HeatmapModel | str | Path,
    out_dir: str | Path,
    stride: int | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    threshold: float = 0.5,
    cache_dir: str | Path | None = None,
    glimpse_fields: int = 4,
    store_label: bool = True,
    progress: Callable[[str, str, int, int], None] | None = None,
) -> list[HeatmapRow]:
    """Heatmaps of many slides; a slide that fails does so alone.

    Args:
        sources: Slide files and/or ``.ome.zarr`` stores.
        model: Loaded once (a checkpoint path is loaded here; a bad checkpoint
            raises, since no slide could be scored).
        progress: ``progress(slide_id, stage, done, total)``.
        Others: as :func:`run_heatmap`.

    Returns:
        One :class:`HeatmapRow` per source, in order.

    Raises:
        WsiDramError: ``out_dir`` (or the cache folder, when a slide file needs
            caching) cannot be written: no slide could be done.
    """
    scorer = model if isinstance(model, HeatmapModel) else load_heatmap_model(model)
    scorer = scorer.with_stride(stride)
    check_writable(out_dir)
    if any(not is_store(s) and Path(s).is_file() for s in sources):
        cache_root = (
            Path(cache_dir) if cache_dir is not None else Path(out_dir) / "cache"
        )
        check_writable(cache_root, "cache folder")
    rows = []
    firsts = _same_id_before(sources)
    for source, first in zip(sources, firsts, strict=True):
        slide_id = slide_id_of(source)
        t0 = time.perf_counter()
        if first is not None:  # its outputs would overwrite the first one's
            reason = (
                f"{source}: duplicate slide id {slide_id!r}, also the id of "
                f"{first} (whose outputs in {out_dir} have this name); rename one"
            )
            log.warning("%s: failed: %s", source, reason)
            rows.append(HeatmapRow(slide_id, str(source), "failed", reason))
            continue
        slide_progress = None
        if progress is not None:

            def slide_progress(stage: str, done: int, total: int) -> None:
                progress(slide_id, stage, done, total)  # noqa: B023

        try:
            result = run_heatmap(
                source,
                scorer,
                out_dir,
                None,
                formats,
                threshold,
                cache_dir,
                glimpse_fields,
                store_label,
                slide_progress,
            )
        except Exception as exc:  # one bad slide must not stop the batch
            reason = one_line(exc)
            log.warning("%s: failed: %s", source, reason)
            log.debug("%s failed", source, exc_info=True)
            rows.append(
                HeatmapRow(
                    slide_id,
                    str(source),
                    "failed",
                    reason,
                    seconds=time.perf_counter() - t0,
                )
            )
            continue
        rows.append(
            HeatmapRow(
                result.slide_id,
                str(source),
                "done",
                score=result.scores.score,
                fields=len(result.scores.fields),
                pixels_read_fraction=result.scores.pixels_read_fraction,
                outputs=result.outputs,
                seconds=result.seconds,
            )
        )
    return rows


def _same_id_before(sources: Sequence[str | Path]) -> list[str | Path | None]:
    """For each source, the earlier source with the same slide id, or None.

    Outputs are named by slide id (``OUT/<slide_id>.heatmap.png`` ...), so two
    sources with one id (``a/x.tif`` and ``b/x.ome.zarr``) would overwrite each
    other; the first in order is scored, the later ones fail naming it.
    """
    first: dict[str, str | Path] = {}
    out: list[str | Path | None] = []
    for source in sources:
        slide_id = slide_id_of(source)
        out.append(first.get(slide_id))
        first.setdefault(slide_id, source)
    return out
