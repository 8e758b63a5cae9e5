"""Open whole-slide images and read their pixels in level-0 or level frames.

A :class:`Slide` wraps an OpenSlide handle (any format OpenSlide reads: Aperio SVS,
Hamamatsu NDPI, MIRAX, generic tiled TIFF, DICOM, ...; plain PNG/JPEG through
OpenSlide's ``ImageSlide``) and adds what the pipeline needs on top:

- the pixel size in micrometres (``openslide.mpp-x``/``-y``) or a clear
  :class:`~wsi_dram.errors.SlideError` that says how to supply it; an explicit
  ``mpp`` overrides the file and is logged as an override, a ``fallback_mpp``
  serves only files without one;
- the *exact* integer factor of every level, derived from the level dimensions,
  because reported downsamples such as 4.00456 or 16.018 come from rounding of the
  level sizes, and level choice must not be fooled by them;
- reads that composite transparent pixels (absent tiles, the area beyond the slide
  edge) over white, so "no data" never turns into black "tissue";
- :meth:`Slide.read_level_region`, which returns the stored pixels of a level without
  resampling: through OpenSlide when the reported downsample is an exact integer,
  through tifffile when it is not (OpenSlide then resamples by the non-integer
  ratio), and through an OpenSlide read anchored at the level origin for formats
  tifffile cannot read.

Coordinates are ``(x, y)``; ``read_region`` takes the level-0 top-left, while
``read_level_region`` takes the top-left in the chosen level's own pixel frame.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import openslide
from openslide import AbstractSlide

from wsi_dram.errors import SlideError

log = logging.getLogger(__name__)

# Reported downsamples within this relative distance of an integer are integer.
_INTEGER_TOLERANCE = 1e-9
# Pixels of a level decoded at once when building a thumbnail (bounds memory).
_THUMBNAIL_BAND_PIXELS = 16 * 1024 * 1024


def composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite non-premultiplied RGBA pixels over a white background.

    Args:
        rgba: (h, w, 4) uint8 array, alpha in the last channel.

    Returns:
        (h, w, 3) uint8 RGB: alpha 0 becomes (255, 255, 255), alpha 255 is unchanged.
    """
    alpha = rgba[..., 3]
    out = np.array(rgba[..., :3])  # (h, w, 3), a C-contiguous copy
    # Most reads are fully opaque: touch only the pixels that are not.
    partial = alpha != 255
    if not partial.any():
        return out
    a = alpha[partial].astype(np.uint16)[:, None]
    rgb = out[partial].astype(np.uint16)
    out[partial] = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def exact_level_factor(
    level_size: tuple[int, int], base_size: tuple[int, int], reported: float
) -> int | None:
    """The integer factor f with level size = floor or ceil of (base size / f).

    Args:
        level_size: (w, h) of the level in its own pixels.
        base_size: (w, h) of level 0.
        reported: the downsample the file or OpenSlide reports for this level.

    Returns:
        f, or None when no integer factor explains both dimensions.
    """
    w, h = level_size
    bw, bh = base_size
    candidates = {max(1, round(reported))}
    if w > 0:
        candidates.add(max(1, round(bw / w)))
    if h > 0:
        candidates.add(max(1, round(bh / h)))
    for f in sorted(candidates):
        fits_w = w in (bw // f, -(-bw // f))
        fits_h = h in (bh // f, -(-bh // f))
        if fits_w and fits_h:
            return f
    return None


def tiff_resolution_mpp(path: str | Path) -> tuple[float, float] | None:
    """Pixel size from the TIFF resolution tags of the first page, via tifffile.

    The tags are rationals (numerator, denominator) in pixels per ResolutionUnit;
    unit 2 is the inch (25 400 µm), unit 3 the centimetre (10 000 µm).

    Args:
        path: a TIFF file.

    Returns:
        (mpp_x, mpp_y) in micrometres per pixel, or None when the file is not a TIFF
        or the unit is "none"/absent.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            unit_tag = tags.get("ResolutionUnit")
            unit = int(unit_tag.value) if unit_tag is not None else 1
            micrometres = {2: 25_400.0, 3: 10_000.0}.get(unit)
            xres, yres = tags.get("XResolution"), tags.get("YResolution")
            if micrometres is None or xres is None or yres is None:
                return None
            (xn, xd), (yn, yd) = xres.value, yres.value
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    if xn <= 0 or yn <= 0:
        return None
    return micrometres * xd / xn, micrometres * yd / yn


class PixelSizeUnknown(SlideError):
    """A slide file has no pixel size and none was given (each command words the
    remedy it accepts: ``--mpp`` for ``preprocess``, a config key for ``train``)."""


class Slide:
    """An open whole-slide image. Create it with :func:`open_slide`.

    Attributes:
        path: the slide file.
        slide_id: the file stem (``tumor_001`` for ``tumor_001.tif``).
        width, height: level-0 size in pixels.
        mpp, mpp_y: pixel size in micrometres per pixel along x and y.
        mpp_source: where mpp came from (``"openslide.mpp-x"``, ``"override"`` or
            ``"fallback"``).
        vendor: OpenSlide's vendor string (``aperio``, ``generic-tiff``, ...), or
            ``"image"`` for a plain image read through ``ImageSlide``.
        objective_power: scan magnification, or None when the file does not say.
        properties: every OpenSlide property.
        associated_images: names of the label/macro/thumbnail images.
        level_count, level_dimensions: number of levels and their (w, h).
        level_downsamples: downsamples as OpenSlide reports them.
        level_factors: exact integer factor of each level (see
            :func:`exact_level_factor`); None where no integer factor fits.
    """

    def __init__(
        self,
        path: Path,
        handle: AbstractSlide,
        mpp: float,
        mpp_y: float,
        mpp_source: str,
        vendor: str,
    ) -> None:
        self.path = path
        self.slide_id = path.stem
        self._osr = handle
        self.mpp = mpp
        self.mpp_y = mpp_y
        self.mpp_source = mpp_source
        self.vendor = vendor
        self.properties: dict[str, str] = dict(handle.properties)
        power = self.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        self.objective_power = _float_or_none(power)
        self.associated_images: list[str] = sorted(handle.associated_images)
        self.level_count: int = handle.level_count
        self.level_dimensions: list[tuple[int, int]] = [
            (int(w), int(h)) for w, h in handle.level_dimensions
        ]
        self.width, self.height = self.level_dimensions[0]
        self.level_downsamples: list[float] = [
            float(d) for d in handle.level_downsamples
        ]
        self.level_factors: list[int | None] = [
            exact_level_factor(size, self.level_dimensions[0], reported)
            for size, reported in zip(
                self.level_dimensions, self.level_downsamples, strict=True
            )
        ]
        self._tiff: Any = None
        self._tiff_levels: dict[int, Any] = {}
        self._tiff_lock = threading.Lock()

    # -- reading -------------------------------------------------------------

    def read_region(
        self, x: int, y: int, level: int, width: int, height: int
    ) -> np.ndarray:
        """Read a region through OpenSlide, composited over white.

        Args:
            x, y: top-left in level-0 pixels (may lie outside the slide).
            level: pyramid level to read from.
            width, height: size of the result in that level's pixels.

        Returns:
            (height, width, 3) uint8 RGB; pixels outside the slide or in absent
            tiles are white.

        Raises:
            SlideError: the pixels cannot be decoded ("pixels unreadable: ...").
        """
        self._check_level(level)
        try:
            image = self._osr.read_region((int(x), int(y)), level, (width, height))
        except (openslide.OpenSlideError, OSError) as exc:  # OSError: Pillow
            raise SlideError(f"pixels unreadable: {exc}", self.path) from exc
        return composite_over_white(np.asarray(image.convert("RGBA")))

    def read_level_region(
        self, level: int, x: int, y: int, width: int, height: int
    ) -> np.ndarray:
        """Read the stored pixels of one level, without any resampling.

        Args:
            level: pyramid level.
            x, y: top-left in THAT LEVEL's pixel frame (level pixel (x, y) covers
                level-0 pixels [f*x, f*x + f) for an exact factor f).
            width, height: size of the result in level pixels.

        Returns:
            (height, width, 3) uint8 RGB, white outside the level and in absent
            tiles.

        Raises:
            SlideError: the pixels cannot be decoded.
        """
        self._check_level(level)
        reported = self.level_downsamples[level]
        factor = self.level_factors[level]
        if factor is not None and abs(reported - factor) <= _INTEGER_TOLERANCE * factor:
            return self.read_region(x * factor, y * factor, level, width, height)

        out = np.full((height, width, 3), 255, dtype=np.uint8)
        lw, lh = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lw), min(y + height, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        pixels = self._read_tiff_level(level, x0, y0, x1, y1)
        if pixels is None:
            # OpenSlide maps a level read to level 0 through the reported downsample;
            # only a read anchored at the level origin returns the stored pixels.
            pixels = self.read_region(0, 0, level, x1, y1)[y0:y1, x0:x1]
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels
        return out

    def _read_tiff_level(
        self, level: int, x0: int, y0: int, x1: int, y1: int
    ) -> np.ndarray | None:
        """Stored pixels [y0:y1, x0:x1] of a level via tifffile, or None."""
        array = self._tiff_level_array(level)
        if array is None:
            return None
        try:
            with self._tiff_lock:
                pixels = np.asarray(array[y0:y1, x0:x1])
        except Exception as exc:
            raise SlideError(f"pixels unreadable: {exc}", self.path) from exc
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.shape[2] == 4:
            return composite_over_white(pixels)
        return np.ascontiguousarray(pixels[..., :3])

    def _tiff_level_array(self, level: int) -> Any:
        """A lazy zarr view of the TIFF page holding ``level``, or None."""
        if level in self._tiff_levels:
            return self._tiff_levels[level]
        import tifffile
        import zarr

        array = None
        w, h = self.level_dimensions[level]
        try:
            with self._tiff_lock:
                if self._tiff is None:
                    self._tiff = tifffile.TiffFile(self.path)
                for s_index, series in enumerate(self._tiff.series):
                    for l_index, page in enumerate(series.levels):
                        shape = page.shape
                        if len(shape) >= 2 and tuple(shape[:2]) == (h, w):
                            store = self._tiff.aszarr(
                                series=s_index, level=l_index, fillvalue=255
                            )
                            array = zarr.open_array(store, mode="r")
                            break
                    if array is not None:
                        break
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            log.debug("%s: tifffile cannot read level %d (%s)", self.path, level, exc)
            array = None
        if array is None or array.dtype != np.uint8:
            array = None
        self._tiff_levels[level] = array
        return array

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose exact factor does not exceed ``downsample``.

        Uses :attr:`level_factors`, so a level reported as 4.0046 counts as 4 and a
        request for 4 picks it; levels without an exact factor are never chosen.

        Args:
            downsample: wanted level-0 pixels per output pixel (>= 1 for a level
                above level 0).

        Returns:
            The level index (0 when nothing coarser fits).
        """
        best, best_factor = 0, 1
        for level, factor in enumerate(self.level_factors):
            if factor is not None and best_factor < factor <= downsample * (1 + 1e-9):
                best, best_factor = level, factor
        return best

    def thumbnail(self, target_mpp: float = 8.0) -> tuple[np.ndarray, float]:
        """A low-resolution RGB view of the whole slide at about ``target_mpp``.

        Reads the best level and averages k x k blocks of it (k an integer), so the
        returned downsample is exact: thumbnail pixel (c, r) covers level-0 pixels
        [d*c, d*c + d) x [d*r, d*r + d). Edge blocks are averaged with white.

        Args:
            target_mpp: wanted micrometres per thumbnail pixel.

        Returns:
            ((h, w, 3) uint8 RGB, d) with d the level-0 pixels per thumbnail pixel.
        """
        wanted = max(1.0, target_mpp / self.mpp)
        level = self.best_level_for_downsample(wanted)
        factor = self.level_factors[level] or 1
        k = max(1, math.floor(wanted / factor + 1e-9))
        lw, lh = self.level_dimensions[level]
        out_w, out_h = -(-lw // k), -(-lh // k)
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        band = max(k, (_THUMBNAIL_BAND_PIXELS // max(lw, 1) // k) * k)
        for top in range(0, lh, band):
            rows = min(band, lh - top)
            padded_rows = -(-rows // k) * k
            pixels = self.read_level_region(level, 0, top, out_w * k, padded_rows)
            blocks = pixels.reshape(padded_rows // k, k, out_w, k, 3)
            mean = blocks.mean(axis=(1, 3), dtype=np.float64)
            out[top // k : top // k + padded_rows // k] = np.round(mean)
        return out, float(factor * k)

    # -- lifetime ------------------------------------------------------------

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise SlideError(
                f"level {level} does not exist (levels 0..{self.level_count - 1})",
                self.path,
            )

    def close(self) -> None:
        """Release the OpenSlide handle and any open TIFF file."""
        self._osr.close()
        with self._tiff_lock:
            if self._tiff is not None:
                self._tiff.close()
                self._tiff = None
            self._tiff_levels.clear()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({self.slide_id!r}, {self.width}x{self.height}, "
            f"mpp={self.mpp:.4g}, levels={self.level_count})"
        )


def _float_or_none(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


class _TiffWarnings(logging.Handler):
    """Collects tifffile's warnings while a file is parsed (instead of showing them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _tiff_damage(path: Path) -> str | None:
    """Why a TIFF file is damaged (e.g. truncated), or None when it looks whole.

    A file cut short loses either image data (a strip or tile runs past the end
    of the file) or the directory chain (tifffile warns of an "invalid ... offset"
    past the end and stops: a reader would then see only the first page, or none,
    and fall back to reading it as a plain image). Both are damage; files that do
    not start like a TIFF (``II``/``MM``) are not judged here (None).
    """
    import tifffile

    with path.open("rb") as handle:
        if handle.read(2) not in (b"II", b"MM"):
            return None
    size = path.stat().st_size
    logger = logging.getLogger("tifffile")
    collect = _TiffWarnings()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # its own "invalid page offset" lines stay quiet
    logger.addHandler(collect)
    try:
        with tifffile.TiffFile(path) as tif:
            end = max(
                (
                    o + n
                    for p in tif.pages
                    for o, n in zip(p.dataoffsets, p.databytecounts, strict=False)
                ),
                default=0,
            )
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        return f"its TIFF structure is unreadable ({exc})"
    finally:
        logger.removeHandler(collect)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    if end > size:
        return f"its image data runs to byte {end} but the file has {size} bytes"
    broken = [m for m in collect.messages if "invalid" in m and "offset" in m]
    if broken:
        detail = " ".join(broken[0].split())
        return f"its TIFF directories point past the end of its {size} bytes ({detail})"
    return None


def _open_handle(path: Path) -> AbstractSlide:
    """OpenSlide for slide formats, ImageSlide for plain images."""
    try:
        if openslide.OpenSlide.detect_format(str(path)) is not None:
            return openslide.OpenSlide(str(path))
        damage = _tiff_damage(path)
        if damage is not None:
            raise SlideError(
                f"file is truncated or damaged: {damage}; copy it again", path
            )
        return openslide.open_slide(str(path))
    except SlideError:
        raise
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(f"unsupported slide format ({exc})", path) from exc
    except openslide.OpenSlideError as exc:
        raise SlideError(_damage_or(path, exc), path) from exc
    except Exception as exc:  # PIL raises its own types for non-images
        raise SlideError(
            f"unsupported slide format: neither OpenSlide nor Pillow can read it "
            f"({type(exc).__name__}: {exc})",
            path,
        ) from exc


def _damage_or(path: Path, exc: Exception) -> str:
    """Why OpenSlide could not open a recognised file: the damage
    :func:`_tiff_damage` finds (a truncated copy), else OpenSlide's own message."""
    try:
        damage = _tiff_damage(path)
    except OSError:
        damage = None
    if damage is None:
        return f"cannot open slide: {exc}"
    return f"file is truncated or damaged: {damage}; copy it again (OpenSlide: {exc})"


def open_slide(
    path: str | Path, mpp: float | None = None, fallback_mpp: float | None = None
) -> Slide:
    """Open a slide and establish its pixel size.

    Args:
        path: the slide file (for DICOM, any file of the series, with the others
            in the same folder; for MIRAX, the ``.mrxs`` beside its data folder).
        mpp: micrometres per pixel to use instead of the file's own value (both
            axes). Given, it is used even when the file has one, and logged.
        fallback_mpp: micrometres per pixel (both axes) for a file without its
            own pixel size; a file's own value wins. Used only when ``mpp`` is
            None; logged when used (``mpp_source`` ``"fallback"``).

    Returns:
        The open :class:`Slide`; close it (or use it as a context manager).

    Raises:
        SlideError: the file is missing or not a slide OpenSlide supports
            (:class:`PixelSizeUnknown`: it has no pixel size and none was given).
    """
    path = Path(path)
    if path.is_dir():
        raise SlideError(
            "is a folder, not a slide file; give one slide file (for MIRAX, the "
            ".mrxs file beside its folder)",
            path,
        )
    if not path.is_file():
        raise SlideError("no such slide file", path)
    handle = _open_handle(path)
    props = handle.properties
    vendor = props.get(openslide.PROPERTY_NAME_VENDOR) or (
        "image" if isinstance(handle, openslide.ImageSlide) else "unknown"
    )
    file_x = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
    file_y = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y))

    if mpp is not None:
        if not mpp > 0:
            handle.close()
            raise SlideError(f"mpp override must be positive, got {mpp}", path)
        log.info(
            "%s: using mpp %.6g um/px given by the run (override; file says %s)",
            path,
            mpp,
            "nothing" if file_x is None else f"{file_x:.6g}",
        )
        return Slide(path, handle, mpp, mpp, "override", vendor)

    if (file_x is None or file_x <= 0) and fallback_mpp is not None:
        if not (math.isfinite(fallback_mpp) and fallback_mpp > 0):
            handle.close()
            raise SlideError(
                f"fallback mpp must be positive and finite, got {fallback_mpp}", path
            )
        log.info(
            "%s: file has no pixel size; using mpp %.6g um/px given by the run",
            path,
            fallback_mpp,
        )
        return Slide(path, handle, fallback_mpp, fallback_mpp, "fallback", vendor)
    if file_x is None or file_x <= 0:
        unit = props.get("tiff.ResolutionUnit")
        unit_text = f'TIFF ResolutionUnit is "{unit}"' if unit else "no TIFF resolution"
        handle.close()
        raise PixelSizeUnknown(
            "pixel size unknown: no openslide.mpp-x/openslide.mpp-y property "
            f"({unit_text}); give it with --mpp X or the config key `mpp` "
            "(micrometres per pixel)",
            path,
        )
    if file_y is None or file_y <= 0:
        file_y = file_x
    return Slide(path, handle, file_x, file_y, "openslide.mpp-x", vendor)


def slide_info(slide: Slide) -> dict[str, Any]:
    """A JSON-ready description of a slide (what ``wsi-dram info --json`` prints).

    Args:
        slide: an open slide.

    Returns:
        Keys ``path``, ``slide_id``, ``vendor``, ``width``, ``height``, ``mpp``,
        ``mpp_y``, ``mpp_source``, ``objective_power``, ``levels`` (list of
        ``{level, width, height, downsample, factor}``), ``associated_images``
        (``{name: [w, h]}``) and ``bounds`` (OpenSlide's scanned box, or None).
    """
    associated: dict[str, list[int]] = {}
    for name in slide.associated_images:
        w = slide.properties.get(f"openslide.associated.{name}.width")
        h = slide.properties.get(f"openslide.associated.{name}.height")
        associated[name] = [int(w), int(h)] if w and h else []
    bounds = None
    if openslide.PROPERTY_NAME_BOUNDS_X in slide.properties:
        bounds = {
            key: int(slide.properties.get(f"openslide.bounds-{key}", "0"))
            for key in ("x", "y", "width", "height")
        }
    return {
        "path": str(slide.path),
        "slide_id": slide.slide_id,
        "vendor": slide.vendor,
        "width": slide.width,
        "height": slide.height,
        "mpp": slide.mpp,
        "mpp_y": slide.mpp_y,
        "mpp_source": slide.mpp_source,
        "objective_power": slide.objective_power,
        "levels": [
            {
                "level": level,
                "width": w,
                "height": h,
                "downsample": slide.level_downsamples[level],
                "factor": slide.level_factors[level],
            }
            for level, (w, h) in enumerate(slide.level_dimensions)
        ],
        "associated_images": associated,
        "bounds": bounds,
    }
