"""Preprocess slides into the cache: pyramid, labels, tile grid, manifest, QC.

For each slide (independently; a failure is recorded and the batch goes on):

1. skip it when ``<slide_id>.ome.zarr`` is complete and both the source signature
   (size, mtime, hash of the first and last MiB, and the sha256 of its annotation
   file) and the parameters are unchanged
   (``force`` rebuilds);
2. open it (:func:`wsi_dram.slides.reader.open_slide`; ``options.mpp`` serves
   only slides whose file has no pixel size),
   detect tissue (:func:`wsi_dram.tissue.detect_tissue`; none -> failed
   "no tissue found"), read its annotation when one matches the slide id;
3. write the pyramid into ``.<slide_id>.ome.zarr.partial`` with Dask
   (:mod:`wsi_dram.cache.pyramid`), add labels ``tissue`` and ``tumor``, the
   ``wsi_dram`` attributes with ``complete: true`` last, the tile grid, then
   rename the store into place; a killed run leaves only a ``.partial`` folder,
   which the next run deletes (whether it rebuilds or skips the slide);
4. draw the QC picture ``qc/<slide_id>.png`` and update ``manifest.csv``.

The slide id is the file stem: a later file with the id of an earlier one in the
batch (``a/x.tif``, ``b/x.tif``) fails naming both, and a file (not a store folder)
named ``<slide_id>.ome.zarr`` in the cache fails its slide and is left untouched.

One run at a time per cache: :func:`preprocess` holds ``.wsi_dram.lock`` in the
cache folder (an ``flock``, released by the OS when the process ends, even when
killed); a second run stops at once with a :class:`CacheError`.

Memory is bounded by the block size times the number of workers: no level is
ever held whole (the tissue mask and label rasters are small, at ``mask_level``).
Limits: the source signature covers the main slide file only (not the companion
files of MRXS/DICOM series); the temp-then-rename step needs a local file system.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import shapely.geometry
import zarr

import wsi_dram
from wsi_dram.cache import pyramid, store, tiles
from wsi_dram.cache.manifest import ManifestRow, update_manifest
from wsi_dram.cache.qc import write_qc_png
from wsi_dram.errors import CacheError, ConfigError, NoTissueError, WsiDramError

log = logging.getLogger(__name__)

_HASH_BYTES = 1 << 20
_QC_SIDE = 1200  # long side (px) of the QC picture at most

#: Name of the lock file :func:`preprocess` holds in the cache folder.
LOCK_NAME = ".wsi_dram.lock"
#: Seconds to wait for a ``--scheduler`` address to answer.
SCHEDULER_TIMEOUT_S = 10.0
_HELD_LOCKS: set[Path] = set()  # cache folders this process holds the lock of


@dataclass
class PreprocessOptions:
    """Every parameter of the cache stage (stored in the store's attributes).

    Attributes:
        chunk: Zarr chunk side in pixels (every level).
        block: Side of one write task in pixels; a multiple of ``chunk``.
        codec: ``zstd`` (lossless, every viewer, fastest to read) or ``jpeg``
            (about 7x smaller and 2x faster to write on real H&E, 1.3x slower to
            decode, lossy; needs wsi-dram's codec to read). See
            :mod:`wsi_dram.cache.store`.
        quality: JPEG quality.
        min_side: The pyramid stops at the first level whose long side is < this.
        margin_um: Chunks with tissue within this distance (µm) are written.
        mask_mpp: Target pixel size (µm) of the label rasters.
        patch_size: Tile side of the tile grid, pixels at ``patch_level``.
        patch_level: Cache level of ``patch_size``.
        min_tissue: Smallest tissue fraction of a kept tile.
        workers: Threads of the threaded scheduler.
        force: Rebuild even when the cache is complete and unchanged.
        mpp: Micrometres per pixel for slides whose file has no pixel size
            (a fallback: a file's own value wins).
        group_map: Annotation group -> label additions (None: default map).
        tissue: Tissue detection parameters (None: defaults).
        qc: Write ``qc/<slide_id>.png``.
    """

    chunk: int = 512
    block: int = 1024
    codec: str = "zstd"
    quality: int = 90
    min_side: int = 1000
    margin_um: float = 64.0
    mask_mpp: float = 8.0
    patch_size: int = 256
    patch_level: int = 0
    min_tissue: float = 0.25
    workers: int = 2
    force: bool = False
    mpp: float | None = None
    group_map: dict[str, str] | None = None
    tissue: Any = None
    qc: bool = True
    _exclude: tuple[str, ...] = field(default=("workers", "force", "qc"), repr=False)

    def params(self) -> dict[str, Any]:
        """The parameters that define the cache's content (JSON-ready)."""
        out = {k: v for k, v in asdict(self).items() if k not in self._exclude}
        out.pop("_exclude", None)
        tissue = self.tissue
        if tissue is not None and hasattr(tissue, "__dataclass_fields__"):
            out["tissue"] = asdict(tissue)
        return _jsonable(out)


class Progress(Protocol):
    """What :func:`preprocess` reports to (the CLI draws rich bars from it)."""

    def slide_started(self, slide_id: str, blocks: int) -> None:
        """A slide's pyramid starts; ``blocks`` tasks are planned."""

    def block_done(self) -> None:
        """One block task finished."""

    def slide_finished(self, row: ManifestRow) -> None:
        """A slide is done, skipped or failed."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def source_signature(path: str | Path) -> dict[str, Any]:
    """(path, size, mtime, sha256 of size + first and last MiB) of a slide file."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.sha256(str(stat.st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_HASH_BYTES))
        if stat.st_size > _HASH_BYTES:
            f.seek(max(stat.st_size - _HASH_BYTES, _HASH_BYTES))
            digest.update(f.read(_HASH_BYTES))
    return {
        "path": str(path),
        "size": int(stat.st_size),
        "mtime": float(stat.st_mtime),
        "hash": digest.hexdigest(),
    }


def _annotation_digest(slide_id: str, folder: str | Path | None) -> str | None:
    """sha256 of the slide's annotation file (None: no folder or no file), so a
    changed, added or removed annotation rebuilds the store's labels."""
    from wsi_dram.slides.annotations import find_annotation

    path = find_annotation(slide_id, folder) if folder else None
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _cannot_write(exc: OSError, cache_dir: Path) -> bool:
    """True for a disk-full / read-only error, or a permission error in the cache."""
    if exc.errno is None:
        return False
    if exc.errno in _WRITE_ERRNOS:
        return True
    inside = str(exc.filename or "").startswith(str(cache_dir))
    return exc.errno in (errno.EACCES, errno.EPERM) and inside


def _check_writable(cache_dir: Path) -> None:
    """Create ``cache_dir`` and prove it writable, or raise :class:`CacheError`."""
    probe = cache_dir / f".wsi_dram_write_test.{os.getpid()}"
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CacheError("the cache folder is a file, not a folder", cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CacheError(
            f"cache folder is not writable ({exc.strerror or exc})", cache_dir
        ) from exc


@contextmanager
def cache_lock(cache_dir: str | Path) -> Iterator[Path]:
    """Hold the cache's preprocess lock (``cache_dir/.wsi_dram.lock``) for a block.

    An exclusive, non-blocking ``flock`` on the lock file, which records the
    holder's pid; the OS releases it when the process ends, however it ends, so a
    killed run never leaves the cache locked. The file itself stays. Reentrant
    within a process: a nested call for a cache already held does nothing.

    Args:
        cache_dir: The cache folder (created, and proved writable, first).

    Yields:
        The lock file's path.

    Raises:
        CacheError: Another process holds the lock (the message names its pid),
            or the cache folder or lock file cannot be written.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / LOCK_NAME
    if holds_lock(cache_dir):
        yield path
        return
    _check_writable(cache_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CacheError(
            f"cannot create the lock file {LOCK_NAME} ({exc.strerror or exc})",
            cache_dir,
        ) from exc
    key = cache_dir.resolve()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise CacheError(
                f"cache is in use by another wsi-dram preprocess run (pid {holder}); "
                "wait for it or use another --cache",
                cache_dir,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD_LOCKS.add(key)
        try:
            yield path
        finally:
            _HELD_LOCKS.discard(key)
    finally:
        os.close(fd)  # releases the flock


def holds_lock(cache_dir: str | Path) -> bool:
    """Whether this process holds ``cache_dir``'s lock (see :func:`cache_lock`)."""
    return Path(cache_dir).resolve() in _HELD_LOCKS


def connect_scheduler(address: str, timeout_s: float | None = None) -> Any:
    """A ``distributed.Client`` connected to ``address`` (tcp://host:port).

    A ``tcp://`` address (or a bare ``host:port``) is checked and probed with a
    plain socket first: a ``Client`` whose construction fails stays half built
    until the garbage collector finalises it, and distributed's finaliser can
    then deadlock against the next ``Client`` being started in the process.

    Args:
        address: The scheduler address.
        timeout_s: Seconds to wait for it (default :data:`SCHEDULER_TIMEOUT_S`).

    Raises:
        ConfigError: The address is malformed or nothing answers there in time.
    """
    from distributed import Client

    timeout = SCHEDULER_TIMEOUT_S if timeout_s is None else timeout_s
    scheme, sep, _ = address.partition("://")
    if not sep or scheme == "tcp":
        match = re.fullmatch(r"(?:tcp://)?\[?([^\[\]/]+?)\]?:(\d+)/?", address)
        if match is None:
            raise ConfigError(
                f"--scheduler {address!r}: not a scheduler address (expected "
                "host:port); give tcp://host:port"
            )
        host, port = match.group(1), int(match.group(2))
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise ConfigError(
                f"--scheduler {address!r}: no dask scheduler answered within "
                f"{timeout:g} s ({exc.strerror or type(exc).__name__}); check the "
                "address and that the scheduler runs"
            ) from exc
    try:
        return Client(address, timeout=timeout)
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, MemoryError):
            # Another kind of server: its bytes read as a huge dask frame length.
            kind, detail = "something other than a dask scheduler answers", "garbled"
        elif isinstance(exc, OSError):
            kind = f"no dask scheduler answered within {timeout:g} s"
        else:
            kind = "not a scheduler address"
        raise ConfigError(
            f"--scheduler {address!r}: {kind} ({detail}); check the address and "
            "that the scheduler runs"
        ) from exc


def _unchanged(final: Path, signature: dict[str, Any], params: dict[str, Any]) -> bool:
    attrs = store.read_project_attrs(final)
    if not attrs or attrs.get("complete") is not True:
        return False
    old = attrs.get("source") or {}
    same_source = all(old.get(k) == signature[k] for k in ("size", "mtime", "hash"))
    # A store from before annotations were signed has no key: None (no file).
    same_source = same_source and old.get("annotation") == signature["annotation"]
    tiles_ok = store.tiles_path(final.parent, str(attrs.get("slide_id"))).exists()
    return same_source and _same_params(attrs, params) and tiles_ok


def _same_params(attrs: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a store made with ``attrs`` matches ``params``.

    ``mpp`` (the fallback pixel size, µm/px) matters only to a slide that used
    it: a slide with its own pixel size is unchanged whatever ``--mpp`` says, and
    one that used the fallback is unchanged when the run gives none (the file
    still has none) or the same value.
    """
    old = dict(attrs.get("params") or {})
    new = dict(params)
    old_mpp, new_mpp = old.pop("mpp", None), new.pop("mpp", None)
    if old != new:
        return False
    source = attrs.get("mpp_source")
    if source == "fallback":
        return new_mpp is None or new_mpp == attrs.get("mpp")
    if source == "override":  # older versions: --mpp overrode the file's value
        return bool(new_mpp == old_mpp and "openslide.mpp-x" not in _props(attrs))
    return True


def _props(attrs: dict[str, Any]) -> dict[str, Any]:
    props = attrs.get("properties")
    return props if isinstance(props, dict) else {}


def _skipped_row(final: Path, source: Path, seconds: float) -> ManifestRow:
    a = store.read_project_attrs(final) or {}
    return ManifestRow(
        slide_id=str(a.get("slide_id", source.stem)),
        source=str(source),
        status="skipped",
        width=int(a.get("width", 0)),
        height=int(a.get("height", 0)),
        mpp=float(a.get("mpp", 0.0)),
        levels=int(a.get("levels", 0)),
        tissue_mm2=float(a.get("tissue_mm2", 0.0)),
        tumour_mm2=float(a.get("tumour_mm2", 0.0)),
        tiles=int(a.get("tiles", 0)),
        seconds=seconds,
    )


def _geojson(geometry: Any) -> Any:
    if geometry is None:
        return None
    return _jsonable(shapely.geometry.mapping(geometry))


def preprocess_slide(
    source: Path,
    cache_dir: Path,
    annotations: Path | None = None,
    options: PreprocessOptions | None = None,
    scheduler: Any = None,
    progress: Progress | None = None,
) -> ManifestRow:
    """Cache one slide; never raises for a bad slide (status ``failed`` instead).

    Args:
        source: The slide file.
        cache_dir: The cache folder.
        annotations: Folder of annotation files matched by slide id, or None.
        options: Parameters.
        scheduler: None (threads) or a ``distributed.Client``.
        progress: Progress sink, or None.

    Returns:
        The slide's manifest row (also written to ``manifest.csv`` by
        :func:`preprocess`).
    """
    options = options or PreprocessOptions()
    t0 = time.perf_counter()
    source = Path(source)
    slide_id = source.stem
    final = store.store_path(cache_dir, slide_id)
    tmp = final.with_name(f".{final.name}.partial")
    try:
        _check_store_place(final)
        signature = source_signature(source)
        signature["annotation"] = _annotation_digest(slide_id, annotations)
        params = options.params()
        if not options.force and _unchanged(final, signature, params):
            log.info("%s: cache complete and source unchanged, skipped", slide_id)
            if tmp.exists() and holds_lock(cache_dir):  # left by a killed run
                log.info("%s: removing the stale %s", slide_id, tmp.name)
                store.remove_store(tmp)
            qc_png = Path(cache_dir) / store.QC_DIR / f"{slide_id}.png"
            if options.qc and not qc_png.exists():  # a run killed before its QC
                cached = store.open_cache(final)
                _qc(final, cache_dir, cached.tissue_geometry, cached.tumor_geometry)
            return _skipped_row(final, source, time.perf_counter() - t0)
        row = _build(
            source,
            cache_dir,
            final,
            tmp,
            annotations,
            options,
            signature,
            params,
            scheduler,
            progress,
        )
    except Exception as exc:  # one bad slide must not stop the batch
        store.remove_store(tmp)
        if isinstance(exc, OSError) and _cannot_write(exc, cache_dir):
            raise CacheError(  # a full or read-only cache stops the batch
                f"cannot write the cache while caching {source.name} "
                f"({os.strerror(exc.errno or 0)}); free space or choose another "
                "--cache, then rerun: finished slides are kept and skipped",
                cache_dir,
            ) from exc
        if isinstance(exc, NoTissueError):
            reason = f"no tissue found in {source.name}"
        elif isinstance(exc, WsiDramError):
            # the path the error concerns, when it is not the slide (e.g. the store)
            foreign = exc.path is not None and exc.path != str(source)
            reason = str(exc) if foreign else exc.reason
        else:
            reason = f"{type(exc).__name__}: {exc}"
            log.debug("%s failed", source, exc_info=True)
        reason = " ".join(str(reason).split())
        if source.name not in reason:  # the row's reason names the file
            reason = f"{source.name}: {reason}"
        log.warning("%s: failed: %s", source, reason)
        return ManifestRow(
            slide_id=slide_id,
            source=str(source),
            status="failed",
            error=reason,
            seconds=time.perf_counter() - t0,
        )
    row.seconds = time.perf_counter() - t0
    return row


def _check_store_place(final: Path) -> None:
    """Refuse a slide whose store path is taken by something that is not a folder.

    A file (or a link to one) named ``<slide_id>.ome.zarr`` is the user's, not a
    store: it is never moved or deleted, and the slide fails naming it.

    Raises:
        CacheError: ``final`` exists (or is a dangling link) and is not a folder.
    """
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise CacheError(
            "is a file, not a cache store; the slide was not cached and the file "
            "was left as it is: move or rename it, then rerun",
            final,
        )


def _build(
    source: Path,
    cache_dir: Path,
    final: Path,
    tmp: Path,
    annotations: Path | None,
    options: PreprocessOptions,
    signature: dict[str, Any],
    params: dict[str, Any],
    scheduler: Any,
    progress: Progress | None,
) -> ManifestRow:
    from wsi_dram.slides.annotations import (
        DEFAULT_GROUP_MAP,
        find_annotation,
        read_annotations,
    )
    from wsi_dram.slides.reader import open_slide
    from wsi_dram.tissue import detect_tissue

    pyramid.check_alignment(options.block, options.chunk)
    store.make_compressor(options.codec, options.chunk, options.quality)
    with open_slide(source, fallback_mpp=options.mpp) as slide:
        tissue = detect_tissue(slide, options.tissue)
        annotation = None
        ann_path = find_annotation(slide.slide_id, annotations) if annotations else None
        if ann_path is not None:
            group_map = {**DEFAULT_GROUP_MAP, **(options.group_map or {})}
            annotation = read_annotations(
                ann_path, slide_size=(slide.width, slide.height), group_map=group_map
            )
        width, height = slide.width, slide.height
        level_count = store.level_count_for(width, height, options.min_side)
        store.remove_store(tmp)
        store.create_image_store(
            tmp,
            slide.slide_id,
            width,
            height,
            slide.mpp,
            slide.mpp_y,
            level_count,
            options.chunk,
            options.codec,
            options.quality,
        )
        margin_px = options.margin_um / slide.mpp
        plan = pyramid.plan_blocks(
            width,
            height,
            level_count,
            slide.level_factors,
            tissue.mask,
            tissue.downsample,
            options.chunk,
            options.block,
            margin_px,
        )
        if progress is not None:
            progress.slide_started(slide.slide_id, sum(len(t) for t in plan))
        on_block = (lambda _n: progress.block_done()) if progress is not None else None
        chunks = pyramid.write_levels(
            plan, tmp, source, options.mpp, scheduler, options.workers, on_block
        )
        for k in range(level_count):  # lets readers detect damaged chunks
            store.write_checksums(tmp / str(k))
        info = _slide_attrs(slide, signature, params, level_count)

    side0 = options.patch_size * 2**options.patch_level
    mask_level = tiles.mask_level_for(info["mpp"], options.mask_mpp, side0, level_count)
    shape = tiles.label_shape(width, height, mask_level)
    mask_ds = float(2**mask_level)
    tissue_label = tiles.resample_mask(tissue.mask, tissue.downsample, shape, mask_ds)
    store.write_label(
        tmp,
        "tissue",
        tissue_label,
        mask_ds,
        {1: (0, 200, 0, 128)},
        mpp=(info["mpp"], info["mpp_y"]),
    )
    tumor_label = None
    tumour_mm2 = 0.0
    if annotation is not None:
        tumor_label = tiles.rasterize(annotation.tumor, shape, mask_ds)
        store.write_label(
            tmp,
            "tumor",
            tumor_label,
            mask_ds,
            {1: (220, 0, 0, 128)},
            mpp=(info["mpp"], info["mpp_y"]),
        )
        tumour_mm2 = float(annotation.tumor_area_px) * info["mpp"] * info["mpp_y"] / 1e6
    grid = tiles.tile_grid(
        width,
        height,
        tissue_label,
        tumor_label,
        mask_ds,
        options.patch_size,
        options.patch_level,
        options.min_tissue,
    )
    tiles.write_tiles(
        store.tiles_path(cache_dir, info["slide_id"]),
        grid,
        {"mpp": info["mpp"], "slide_id": info["slide_id"], "mask_level": mask_level},
    )
    info.update(
        tissue_geojson=_geojson(tissue.geometry),
        tumor_geojson=None if annotation is None else _geojson(annotation.tumor),
        annotation=None
        if annotation is None
        else {
            "path": str(annotation.path),
            "polygons_per_group": _jsonable(dict(annotation.polygons_per_group)),
            "repairs": list(annotation.repairs),
            "warnings": list(annotation.warnings),
            "regions": {
                str(label): _geojson(geometry)
                for label, geometry in annotation.regions.items()
            },
        },
        tissue_mm2=float(tissue.area_mm2),
        tumour_mm2=tumour_mm2,
        tiles=len(grid),
        chunks_written=int(chunks),
        mask_level=mask_level,
        tissue_downsample=float(tissue.downsample),
        complete=True,
    )
    root = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
    root.attrs[store.ATTRS_KEY] = info  # the complete flag is written last
    backup = final.with_name(f".{final.name}.old")
    if final.exists():
        store.remove_store(backup)
        os.replace(final, backup)
    os.replace(tmp, final)
    store.remove_store(backup)
    if options.qc:
        _qc(
            final,
            cache_dir,
            tissue.geometry,
            None if annotation is None else annotation.tumor,
        )
    return ManifestRow(
        slide_id=info["slide_id"],
        source=str(source),
        status="done",
        width=width,
        height=height,
        mpp=info["mpp"],
        levels=level_count,
        tissue_mm2=info["tissue_mm2"],
        tumour_mm2=tumour_mm2,
        tiles=len(grid),
    )


def _slide_attrs(
    slide: Any, signature: dict[str, Any], params: dict[str, Any], level_count: int
) -> dict[str, Any]:
    return {
        "slide_id": slide.slide_id,
        "source": signature,
        "width": int(slide.width),
        "height": int(slide.height),
        "mpp": float(slide.mpp),
        "mpp_y": float(slide.mpp_y),
        "mpp_source": str(slide.mpp_source),
        "vendor": str(slide.vendor),
        "objective_power": slide.objective_power,
        "properties": {k: str(v) for k, v in slide.properties.items()},
        "source_level_dimensions": [list(d) for d in slide.level_dimensions],
        "source_level_downsamples": [float(d) for d in slide.level_downsamples],
        "source_level_factors": list(slide.level_factors),
        "levels": level_count,
        "level_sources": pyramid.source_levels(slide.level_factors, level_count),
        "params": params,
        "version": wsi_dram.__version__,
        "complete": False,
    }


def _qc(final: Path, cache_dir: Path, tissue: Any, tumor: Any) -> None:
    cached = store.open_cache(final)
    level = next(
        (k for k, a in enumerate(cached.levels) if max(a.shape[1:]) <= _QC_SIDE),
        cached.level_count - 1,
    )
    thumb = np.ascontiguousarray(
        np.asarray(cached.levels[level][...]).transpose(1, 2, 0)
    )
    title = f"{cached.slide_id}  tissue {cached.attrs.get('tissue_mm2', 0):.2f} mm2"
    # Annotated regions that are not tumour (exclusions, other classes) are
    # drawn too, so the QC shows every annotation the pipeline read.
    regions = (cached.attrs.get("annotation") or {}).get("regions") or {}
    others = {
        label: shapely.geometry.shape(data)
        for label, data in regions.items()
        if label != "tumor" and data
    }
    write_qc_png(
        Path(cache_dir) / store.QC_DIR / f"{cached.slide_id}.png",
        thumb,
        float(2**level),
        tissue,
        tumor,
        title,
        others,
    )


def preprocess(
    slides: Iterable[str | Path],
    cache_dir: str | Path,
    annotations: str | Path | None = None,
    options: PreprocessOptions | None = None,
    scheduler: Any = None,
    progress: Progress | None = None,
) -> list[ManifestRow]:
    """Cache every slide; record each outcome in ``cache_dir/manifest.csv``.

    Args:
        slides: Slide files.
        cache_dir: Output folder (created).
        annotations: Folder of annotation files (matched by slide id), or None.
        options: Parameters (defaults: :class:`PreprocessOptions`).
        scheduler: None for Dask's threaded scheduler, a ``distributed.Client``,
            or a scheduler address string (a Client is opened and closed here).
        progress: Progress sink.

    Returns:
        One row per slide in input order; the manifest is rewritten after each.

    Raises:
        CacheError: The cache is unwritable or another run holds its lock.
        ConfigError: The scheduler address is malformed or unreachable.
    """
    options = options or PreprocessOptions()
    cache_dir = Path(cache_dir)
    with cache_lock(cache_dir):
        return _preprocess_locked(
            slides, cache_dir, annotations, options, scheduler, progress
        )


def _preprocess_locked(
    slides: Iterable[str | Path],
    cache_dir: Path,
    annotations: str | Path | None,
    options: PreprocessOptions,
    scheduler: Any,
    progress: Progress | None,
) -> list[ManifestRow]:
    ann = Path(annotations) if annotations is not None else None
    client, own_client = scheduler, False
    if isinstance(scheduler, str):
        client, own_client = connect_scheduler(scheduler), True
    rows: list[ManifestRow] = []
    files = _once_each([Path(source) for source in slides])
    # slide id -> the file of this run it was cached from (done or skipped).
    # Slide ids key the cache (<slide_id>.ome.zarr) and the manifest, so two
    # files with one id cannot both be cached: files are taken in input order
    # and a later one is refused only if an earlier one was cached; after a
    # failed one, the next file with its id is cached and the manifest keeps it.
    cached_from: dict[str, Path] = {}
    try:
        for source in files:
            first = cached_from.get(source.stem)
            if first is not None:
                # not in the manifest: the id's row is the cached file's
                row = ManifestRow(
                    slide_id=source.stem,
                    source=str(source),
                    status="failed",
                    error=(
                        f"{source}: duplicate slide id {source.stem!r}, also the id "
                        f"of {first} (cached from that file); rename one of them"
                    ),
                )
                log.warning("%s: failed: %s", source, row.error)
            else:
                row = preprocess_slide(
                    source, cache_dir, ann, options, client, progress
                )
                if row.status != "failed":
                    cached_from[source.stem] = source
                try:
                    update_manifest(cache_dir, [row])
                except OSError as exc:
                    raise CacheError(
                        f"cannot write manifest.csv ({exc.strerror or exc}); the "
                        "previous manifest is kept",
                        cache_dir,
                    ) from exc
            rows.append(row)
            if progress is not None:
                progress.slide_finished(row)
    finally:
        if own_client:
            client.close()
    return rows


def _once_each(files: list[Path]) -> list[Path]:
    """``files`` without repeats of one file (``x.tif`` and ``*.tif``), in order."""
    seen: set[Path] = set()
    kept: list[Path] = []
    for path in files:
        key = path.resolve()
        if key in seen:
            log.info("%s: named twice; cached once", path)
            continue
        seen.add(key)
        kept.append(path)
    return kept
