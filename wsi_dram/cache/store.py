"""The per-slide cache store: layout, NGFF metadata, codecs, and the reader.

Layout (``CACHE/<slide_id>.ome.zarr``)::

    .zattrs            multiscales (NGFF 0.4), omero, wsi_dram (project key)
    0, 1, ..., N-1     uint8 arrays (3, H // 2**k, W // 2**k), axes (c, y, x),
                       chunks (3, c, c), fill value 255 (white); chunks with no
                       tissue within a margin are never written
    labels/tissue/0..  uint8 (y, x) label pyramid at level ``mask_level``
    labels/tumor/0..   the same for the rasterised tumour geometry (annotated only)

Why OME-NGFF 0.4 on zarr format 2 (written by zarr-python 3 with
``zarr_format=2``): QuPath 0.6, napari-ome-zarr and ome-zarr-py all read 0.4 on
format 2, whereas NGFF 0.5 (zarr format 3) is not yet read by every one of them.
The ``dimension_separator`` is ``/`` as NGFF 0.4 requires.

Every level's coordinate transforms are a ``scale`` (micrometres per pixel on y and
x, 1 on c) followed by a ``translation`` of ``(scale_k - scale_0) / 2`` on y and x
(0 on c): level k is a 2**k binning of level 0, so its pixel centres sit half a
coarse pixel minus half a fine pixel from the origin (ome/ngff#494).

Codecs: ``zstd`` (Blosc zstd, lossless, readable by every zarr reader) and ``jpeg``.
JPEG stores use :class:`PlanarJpeg` (numcodecs id ``wsi_dram_jpeg``), which turns a
planar ``(3, c, c)`` chunk into an interleaved ``(c, c, 3)`` RGB JPEG and back.
Only processes that imported :mod:`wsi_dram.cache` know that codec, so QuPath,
napari and plain ome-zarr-py cannot decode JPEG stores; the lossless default keeps
every viewer able to open the cache.

Why zstd is the default (tissue chunks of CMU-1-Small-Region, real H&E, CPU
time; ``wsi_dram.benchmarks.preprocess``): JPEG Q90 is 6.9x smaller (292 against
2,006 kB per MP) and 2x faster to encode (about 340 against 170 MP/s), but 1.3x
slower to decode through the chunk reader (about 220 against 290 MP/s) and 1.4x
through zarr, and it changes pixels (mean error 4.8 grey levels). Reads happen
at every training step, writes once, so read speed and exactness win; use
``jpeg`` when disk space is the limit.
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numcodecs
import numpy as np
import shapely.geometry
import zarr
from numcodecs.abc import Codec

from wsi_dram.errors import CacheError, ConfigError
from wsi_dram.jsontext import strict_json

log = logging.getLogger(__name__)

NGFF_VERSION = "0.4"
ATTRS_KEY = "wsi_dram"
STORE_SUFFIX = ".ome.zarr"
TILES_SUFFIX = ".h5"
MANIFEST_NAME = "manifest.csv"
CHECKSUMS_NAME = ".wsi_dram_crc32.json"
QC_DIR = "qc"
FILL_VALUE = 255
CHANNELS = (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))
CODECS = ("zstd", "jpeg")
_V2_KEYS: Any = {"name": "v2", "separator": "/"}


def store_path(cache_dir: str | Path, slide_id: str) -> Path:
    """Return ``cache_dir/<slide_id>.ome.zarr``."""
    return Path(cache_dir) / f"{slide_id}{STORE_SUFFIX}"


def tiles_path(cache_dir: str | Path, slide_id: str) -> Path:
    """Return ``cache_dir/<slide_id>.h5`` (the tile grid)."""
    return Path(cache_dir) / f"{slide_id}{TILES_SUFFIX}"


def level_count_for(width: int, height: int, min_side: int = 1000) -> int:
    """Number of factor-2 levels: halve until the long side is below ``min_side``.

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        min_side: The coarsest level is the first whose long side is < this.

    Returns:
        At least 1; level k has size ``(width // 2**k, height // 2**k)``.
    """
    count = 1
    while max(width, height) // 2 ** (count - 1) >= min_side:
        if min(width, height) // 2**count < 1:
            break
        count += 1
    return count


class PlanarJpeg(Codec):  # type: ignore[misc]
    """JPEG for planar RGB chunks ``(3, h, w)``: transposed to ``(h, w, 3)``.

    Args:
        shape: The chunk shape ``(3, h, w)`` (zarr pads edge chunks to it).
        level: JPEG quality, 1-100.
    """

    codec_id = "wsi_dram_jpeg"

    def __init__(self, shape: tuple[int, int, int] | list[int], level: int = 90):
        self.shape = tuple(int(s) for s in shape)
        self.level = int(level)
        if len(self.shape) != 3 or self.shape[0] != 3:
            raise ConfigError(f"PlanarJpeg needs a (3, h, w) chunk, got {self.shape}")

    def encode(self, buf: Any) -> bytes:
        planar = np.ascontiguousarray(buf, dtype=np.uint8).reshape(self.shape)
        return self.encode_rgb(planar.transpose(1, 2, 0))

    def encode_rgb(self, rgb: np.ndarray) -> bytes:
        """Encode an interleaved (h, w, 3) chunk (no planar round trip)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        return bytes(imagecodecs.jpeg8_encode(rgb, level=self.level))

    def decode_rgb(self, buf: Any) -> np.ndarray:
        """Decode to the interleaved (h, w, 3) chunk."""
        return np.asarray(imagecodecs.jpeg8_decode(bytes(buf)))

    def decode(self, buf: Any, out: Any = None) -> Any:
        rgb = imagecodecs.jpeg8_decode(bytes(buf))  # (h, w, 3)
        planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        if out is not None:
            dest = (
                np.frombuffer(out, dtype=np.uint8) if not hasattr(out, "shape") else out
            )
            dest.reshape(-1)[:] = planar.reshape(-1)
            return out
        return planar

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "shape": list(self.shape), "level": self.level}


numcodecs.register_codec(PlanarJpeg)


def make_compressor(codec: str, chunk: int, quality: int = 90) -> Codec:
    """The numcodecs compressor for ``codec`` (``zstd`` or ``jpeg``).

    Raises:
        ConfigError: For an unknown codec name.
    """
    if codec == "zstd":
        # Level 1 with one Blosc block per channel plane: on real H&E
        # (CMU-1-Small-Region) 5x faster to encode than level 5 with Blosc's
        # automatic block size (164 against 31 MP/s), as fast to decode
        # (340 MP/s), 1.3% larger (ratio 1.50 against 1.52).
        return numcodecs.Blosc(
            cname="zstd",
            clevel=1,
            shuffle=numcodecs.Blosc.SHUFFLE,
            blocksize=chunk * chunk,
        )
    if codec == "jpeg":
        return PlanarJpeg((3, chunk, chunk), level=quality)
    raise ConfigError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


class ChunkIO:
    """Whole-chunk reads and writes of one level array, without zarr's machinery.

    The writer encodes a chunk with the array's own compressor and writes the
    file under the array's chunk key (``0/<row>/<col>``, ``/`` separator), the
    same bytes ``zarr`` would write; a chunk that is all fill value is not
    written (``write_empty_chunks=False``). Skipping zarr's per-call indexing
    and event loop saves about 3 ms per 512 px chunk; encoding and file I/O
    release the GIL, so writer threads run in parallel. Only whole chunks (or
    the array's edge) are written, as the pyramid's alignment rule requires.

    Pixels go in and out interleaved, (h, w, 3) as slides give them: a JPEG
    chunk is encoded from them directly, a zstd chunk after one transposing
    copy to the stored planar (3, h, w) layout.

    Args:
        array_path: The level folder (holding ``.zarray``), e.g. ``store/0``.

    Raises:
        CacheError: When the folder is not a zarr v2 uint8 ``(3, H, W)`` array
            with C order, no filters and ``/`` chunk keys.
    """

    def __init__(self, array_path: str | Path) -> None:
        self.path = Path(array_path)
        try:
            meta = json.loads((self.path / ".zarray").read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"not a zarr v2 array: {exc}", self.path) from exc
        if (
            meta.get("zarr_format") != 2
            or meta.get("dtype") != "|u1"
            or meta.get("order") != "C"
            or meta.get("filters")
            or meta.get("dimension_separator") != "/"
            or len(meta.get("shape", ())) != 3
            or meta.get("shape")[0] != 3
        ):
            raise CacheError("not a wsi-dram level array (3, H, W) uint8", self.path)
        _, self.height, self.width = (int(v) for v in meta["shape"])
        _, self.chunk_h, self.chunk_w = (int(v) for v in meta["chunks"])
        self.fill = int(meta["fill_value"])
        self.codec = numcodecs.get_codec(meta["compressor"])
        self._jpeg = isinstance(self.codec, PlanarJpeg)

    def chunk_path(self, cx: int, cy: int) -> Path:
        """The file of the chunk whose top-left is level pixel (cx, cy)."""
        return self.path / "0" / str(cy // self.chunk_h) / str(cx // self.chunk_w)

    def write(self, cx: int, cy: int, rgb: np.ndarray) -> bool:
        """Encode and store the chunk whose top-left is level pixel (cx, cy).

        Args:
            cx: Chunk left (level pixels, a multiple of the chunk side).
            cy: Chunk top.
            rgb: (h, w, 3) uint8 pixels of the chunk (h, w clipped at the
                array's edge); padded with the fill value to the full chunk.

        Returns:
            False when the chunk is all fill value (nothing written).
        """
        h, w = rgb.shape[:2]
        if (h, w) != (self.chunk_h, self.chunk_w):
            full = np.full((self.chunk_h, self.chunk_w, 3), self.fill, np.uint8)
            full[:h, :w] = rgb
            rgb = full
        if not (rgb != self.fill).any():
            return False
        if self._jpeg:
            data = self.codec.encode_rgb(rgb)
        else:
            data = self.codec.encode(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        key = self.chunk_path(cx, cy)
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(data)
        return True

    def read(self, cx: int, cy: int) -> np.ndarray:
        """The full (chunk_h, chunk_w, 3) chunk at level pixel (cx, cy).

        Absent chunks are the fill value (white).

        Raises:
            CacheError: Naming the chunk file when it cannot be decoded.
        """
        key = self.chunk_path(cx, cy)
        try:
            data = key.read_bytes()
        except FileNotFoundError:
            return np.full((self.chunk_h, self.chunk_w, 3), self.fill, np.uint8)
        try:
            if self._jpeg:
                return self.codec.decode_rgb(data).reshape(
                    self.chunk_h, self.chunk_w, 3
                )
            planar = np.frombuffer(self.codec.decode(data), np.uint8)
            return planar.reshape(3, self.chunk_h, self.chunk_w).transpose(1, 2, 0)
        except Exception as exc:
            raise CacheError(f"corrupted chunk: {exc}", key) from exc

    def read_region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Level pixels (height, width, 3) at (x, y), clipped to the array.

        Args:
            x: Left, a multiple of the chunk width (level pixels).
            y: Top, a multiple of the chunk height.
            width: Width in level pixels.
            height: Height in level pixels.
        """
        width = min(width, self.width - x)
        height = min(height, self.height - y)
        out = np.empty((height, width, 3), np.uint8)
        for cy in range(y, y + height, self.chunk_h):
            for cx in range(x, x + width, self.chunk_w):
                h = min(self.chunk_h, y + height - cy)
                w = min(self.chunk_w, x + width - cx)
                out[cy - y : cy - y + h, cx - x : cx - x + w] = self.read(cx, cy)[
                    :h, :w
                ]
        return out


def level_transforms(
    mpp_y: float, mpp_x: float, downsample: float, channel: bool = True
) -> list[dict[str, Any]]:
    """NGFF ``scale`` + ``translation`` of a level binned by ``downsample``.

    Args:
        mpp_y: Level-0 pixel height in micrometres.
        mpp_x: Level-0 pixel width in micrometres.
        downsample: Level-0 pixels per level pixel (2**k).
        channel: Prepend the c axis (scale 1, translation 0).

    Returns:
        ``[{"type": "scale", ...}, {"type": "translation", ...}]`` with
        translation ``(scale - scale_0) / 2`` on y and x.
    """
    sy, sx = mpp_y * downsample, mpp_x * downsample
    scale = [sy, sx]
    shift = [(sy - mpp_y) / 2.0, (sx - mpp_x) / 2.0]
    if channel:
        scale, shift = [1.0, *scale], [0.0, *shift]
    return [
        {"type": "scale", "scale": scale},
        {"type": "translation", "translation": shift},
    ]


def multiscales_metadata(
    name: str,
    mpp_x: float,
    mpp_y: float,
    downsamples: list[float],
    channel: bool = True,
    method: str = "mean",
) -> list[dict[str, Any]]:
    """The NGFF 0.4 ``multiscales`` list for datasets ``"0"``, ``"1"``, ...."""
    space = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    axes = ([{"name": "c", "type": "channel"}] if channel else []) + space
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": level_transforms(mpp_y, mpp_x, d, channel),
        }
        for k, d in enumerate(downsamples)
    ]
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": axes,
            "datasets": datasets,
            "type": method,
            "metadata": {"description": "level k is the 2x2**k block mean of level 0"},
        }
    ]


def omero_metadata(name: str) -> dict[str, Any]:
    """NGFF ``omero`` rendering hints: red, green, blue channels over 0-255."""
    return {
        "name": name,
        "version": NGFF_VERSION,
        "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
        "channels": [
            {
                "label": label,
                "color": colour,
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"min": 0, "max": 255, "start": 0, "end": 255},
            }
            for label, colour in CHANNELS
        ],
    }


def create_image_store(
    path: str | Path,
    name: str,
    width: int,
    height: int,
    mpp_x: float,
    mpp_y: float,
    level_count: int,
    chunk: int = 512,
    codec: str = "zstd",
    quality: int = 90,
) -> zarr.Group:
    """Create an empty multiscale RGB store (all chunks absent = white).

    Args:
        path: The store folder (overwritten if it exists).
        name: Image name (the slide id).
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp_x: Level-0 micrometres per pixel along x.
        mpp_y: Level-0 micrometres per pixel along y.
        level_count: Number of factor-2 levels.
        chunk: Chunk side in pixels (chunks are (3, chunk, chunk)).
        codec: ``zstd`` or ``jpeg``.
        quality: JPEG quality (jpeg only).

    Returns:
        The root group, opened for writing.
    """
    if chunk < 16 or chunk % 16:
        raise ConfigError(f"chunk size {chunk} must be a multiple of 16 (>= 16)")
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for k in range(level_count):
        shape = (3, max(1, height // 2**k), max(1, width // 2**k))
        root.create_array(
            name=str(k),
            shape=shape,
            chunks=(3, chunk, chunk),
            dtype="uint8",
            fill_value=FILL_VALUE,
            compressors=make_compressor(codec, chunk, quality),
            chunk_key_encoding=_V2_KEYS,
            config={"write_empty_chunks": False},
        )
    root.attrs.update(
        {
            "multiscales": multiscales_metadata(
                name, mpp_x, mpp_y, [float(2**k) for k in range(level_count)]
            ),
            "omero": omero_metadata(name),
        }
    )
    return root


def write_label(
    store: str | Path,
    name: str,
    array: np.ndarray,
    downsample: float,
    colors: dict[int, tuple[int, int, int, int]] | None = None,
    mpp: tuple[float, float] | None = None,
    min_side: int = 64,
) -> None:
    """Add (or replace) the NGFF label ``labels/<name>`` as a small pyramid.

    Args:
        store: The ``.ome.zarr`` folder.
        name: Label name (``tissue``, ``tumor``, ``heatmap``, ...).
        array: (h, w) integer raster; pixel (row, col) covers level-0
            ``[col * downsample, (col + 1) * downsample)`` along x (same for y).
        downsample: Level-0 pixels per label pixel.
        colors: label value -> RGBA (0-255) for ``image-label.colors``.
        mpp: Level-0 (x, y) micrometres per pixel; read from the store when None.
        min_side: Coarser label levels (2x max-pooled) are added while the long
            side stays >= this.
    """
    if array.ndim != 2:
        raise CacheError(f"label {name!r} must be 2-D (y, x), got {array.shape}", store)
    root = zarr.open_group(str(store), mode="r+", zarr_format=2)
    if mpp is None:
        info: dict[str, Any] = dict(root.attrs).get(ATTRS_KEY) or {}  # type: ignore[assignment]
        mpp = (
            float(info.get("mpp", 1.0)),
            float(info.get("mpp_y", info.get("mpp", 1.0))),
        )
    labels = root.require_group("labels")
    group = labels.create_group(name, overwrite=True)
    levels = [np.ascontiguousarray(array)]
    while max(levels[-1].shape) // 2 >= min_side and min(levels[-1].shape) >= 2:
        prev = levels[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3)))
    for k, data in enumerate(levels):
        side = min(256, max(data.shape))
        arr = group.create_array(
            name=str(k),
            shape=data.shape,
            chunks=(side, side),
            dtype=data.dtype,
            fill_value=0,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5),
            chunk_key_encoding=_V2_KEYS,
        )
        arr[...] = data
    downs = [float(downsample) * 2**k for k in range(len(levels))]
    meta = multiscales_metadata(
        name, mpp[0], mpp[1], downs, channel=False, method="max"
    )
    meta[0]["metadata"] = {"description": "level k is the 2**k max-pool of level 0"}
    colour_list = [
        {"label-value": int(v), "rgba": [int(c) for c in rgba]}
        for v, rgba in (colors or {1: (0, 255, 0, 128)}).items()
    ]
    label_attrs: dict[str, Any] = {
        "multiscales": meta,
        "image-label": {
            "version": NGFF_VERSION,
            "colors": colour_list,
            "source": {"image": "../../"},
        },
    }
    group.attrs.update(label_attrs)
    names: list[Any] = list(dict(labels.attrs).get("labels") or [])  # type: ignore[arg-type]
    if name not in names:
        names.append(name)
    labels.attrs["labels"] = names


def write_checksums(level_dir: str | Path) -> int:
    """Record the CRC-32 of every chunk file of one level array.

    Blosc/zstd chunks carry no checksum, so a damaged chunk may decode to wrong
    pixels without any error; readers (:mod:`wsi_dram.glimpse.chunks`) check each
    chunk against this table, and a chunk listed here but missing is an error
    rather than white background.

    Args:
        level_dir: The array folder (``<store>/<k>``); the table goes to its
            ``CHECKSUMS_NAME`` file, keys are chunk keys (``"0/3/5"``).

    Returns:
        The number of chunks recorded.
    """
    level_dir = Path(level_dir)
    table = {
        p.relative_to(level_dir).as_posix(): zlib.crc32(p.read_bytes())
        for p in sorted(level_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    (level_dir / CHECKSUMS_NAME).write_text(strict_json(table))
    return len(table)


def read_checksums(level_dir: str | Path) -> dict[str, int] | None:
    """The chunk key -> CRC-32 table of a level, or None when it has none."""
    try:
        return {
            str(k): int(v)
            for k, v in json.loads(
                (Path(level_dir) / CHECKSUMS_NAME).read_text()
            ).items()
        }
    except (OSError, ValueError, AttributeError):
        return None


def read_project_attrs(path: str | Path) -> dict[str, Any] | None:
    """The ``wsi_dram`` attributes of a store, or None when absent/unreadable."""
    zattrs = Path(path) / ".zattrs"
    try:
        return dict(json.loads(zattrs.read_text()).get(ATTRS_KEY) or {}) or None
    except (OSError, ValueError, AttributeError):
        return None


def is_complete(path: str | Path) -> bool:
    """True when the store exists and its ``wsi_dram.complete`` flag is set."""
    attrs = read_project_attrs(path)
    return bool(attrs and attrs.get("complete") is True)


def remove_store(path: str | Path) -> None:
    """Delete a store folder if it exists (no error when absent); a file or a
    link in its place (left there by hand or by another tool) is removed too."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@dataclass
class CachedSlide:
    """A complete cache store opened for reading.

    Attributes:
        path: The ``.ome.zarr`` folder.
        slide_id: The slide's id (source file stem).
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Level-0 micrometres per pixel (x).
        levels: One read-only zarr array (3, H_k, W_k) uint8 per level k.
        attrs: The ``wsi_dram`` attribute dictionary.
    """

    path: Path
    slide_id: str
    width: int
    height: int
    mpp: float
    levels: list[zarr.Array]
    attrs: dict[str, Any]
    _root: zarr.Group = field(repr=False)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.levels)

    @property
    def level_downsamples(self) -> list[float]:
        """Level-0 pixels per level pixel: ``2**k``."""
        return [float(2**k) for k in range(len(self.levels))]

    @property
    def mask_level(self) -> int:
        """The pyramid level whose grid the labels use."""
        return int(self.attrs.get("mask_level", 0))

    def _label(self, name: str) -> tuple[np.ndarray, float] | None:
        try:
            arr: Any = self._root[f"labels/{name}/0"]
        except KeyError:
            return None
        return np.asarray(arr[...]) > 0, float(2**self.mask_level)

    def tissue_mask(self) -> tuple[np.ndarray, float]:
        """The tissue label: bool (h, w) and level-0 pixels per mask pixel."""
        out = self._label("tissue")
        if out is None:
            raise CacheError("store has no labels/tissue", self.path)
        return out

    def tumor_mask(self) -> tuple[np.ndarray, float] | None:
        """The tumour label like :meth:`tissue_mask`, or None when not annotated."""
        return self._label("tumor")

    @property
    def tissue_geometry(self) -> Any:
        """Tissue outline (shapely, level-0 px)."""
        return _geometry(self.attrs.get("tissue_geojson"))

    @property
    def tumor_geometry(self) -> Any:
        """Tumour geometry (shapely, level-0 px) or None when not annotated."""
        data = self.attrs.get("tumor_geojson")
        return None if data is None else _geometry(data)

    def thumbnail(self) -> tuple[np.ndarray, float]:
        """The coarsest level as RGB (h, w, 3) uint8 and its level-0 px per px."""
        top = self.levels[-1]
        return np.ascontiguousarray(np.asarray(top[...]).transpose(1, 2, 0)), float(
            2 ** (len(self.levels) - 1)
        )

    def read_region(
        self, x: int, y: int, level: int, width: int, height: int
    ) -> np.ndarray:
        """RGB (height, width, 3) of ``level`` at level-0 (x, y); white outside."""
        d = 2**level
        x0, y0 = x // d, y // d
        arr = self.levels[level]
        out = np.full((3, height, width), FILL_VALUE, np.uint8)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + width, arr.shape[2]), min(y0 + height, arr.shape[1])
        if sx1 > sx0 and sy1 > sy0:
            out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[:, sy0:sy1, sx0:sx1]
        return out.transpose(1, 2, 0)


def _geometry(data: Any) -> Any:
    if not data:
        return shapely.geometry.MultiPolygon()
    return shapely.geometry.shape(data)


def open_cache(path: str | Path) -> CachedSlide:
    """Open a complete cache store for reading.

    Raises:
        CacheError: Naming the path when it is missing, incomplete (no
            ``complete: true``, e.g. a killed run) or not a wsi-dram store.
    """
    path = Path(path)
    if not path.exists():
        raise CacheError("no such cache store (run `wsi-dram preprocess` first)", path)
    attrs = read_project_attrs(path)
    if attrs is None:
        raise CacheError("not a wsi-dram cache store (no 'wsi_dram' attributes)", path)
    if attrs.get("complete") is not True:
        raise CacheError("cache store is incomplete; rerun `wsi-dram preprocess`", path)
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=2)
        meta: Any = root.attrs["multiscales"]
        count = len(meta[0]["datasets"])
        levels = [root[str(k)] for k in range(count)]
    except (KeyError, IndexError, ValueError, OSError) as exc:
        raise CacheError(f"cache store is damaged: {exc}", path) from exc
    return CachedSlide(
        path=path,
        slide_id=str(attrs["slide_id"]),
        width=int(attrs["width"]),
        height=int(attrs["height"]),
        mpp=float(attrs["mpp"]),
        levels=levels,  # type: ignore[arg-type]
        attrs=attrs,
        _root=root,
    )
