"""Pyramidal heatmap TIFF with the slide's extent, and the heatmap NGFF label.

The TIFF has the slide's level-0 size and mpp, so viewers that overlay images
by physical size (QuPath, ASAP, OpenSlide-based tools) line it up with the
slide. Each pixel takes the colour of the heatmap cell under its centre
(nearest); unscored pixels are white. Tiles are made on demand for
:func:`wsi_dram.slides.tiff_writer.write_pyramidal_tiff`, so no full-resolution
canvas is ever held in memory: a tile only samples the small probability grid.

A cell of the heatmap covers many tiles, so almost every tile is one flat
colour, and the tiles along a cell edge repeat down (or across) the edge.
:class:`EncodedTiles` therefore describes each tile by its runs of cells (run
lengths and the cells' colour indices), compresses each distinct description
once and reuses the bytes: a 100k x 100k slide has ~200k tiles but only a few
thousand distinct ones. JPEG output has no such shortcut (every tile is
rendered and encoded).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np

from wsi_dram.export.heatmap import (
    DEFAULT_CMAP,
    Heatmap,
    RasterColours,
    colour_lut,
    sample_raster,
)
from wsi_dram.export.heatmap import _runs as runs

log = logging.getLogger(__name__)

NOT_SCORED_RGB = (255, 255, 255)


def heatmap_renderer(
    heatmap: Heatmap, cmap: str = DEFAULT_CMAP
) -> Callable[[int, int, int, int, int], np.ndarray]:
    """A ``render(level, x, y, w, h)`` callback for the pyramidal TIFF writer.

    Args:
        heatmap: The slide heatmap.
        cmap: Matplotlib colour map name.

    Returns:
        A function giving the (h, w, 3) uint8 pixels of pyramid level
        ``level`` (``2**level`` level-0 pixels per pixel) at level-pixel
        ``(x, y)``.
    """

    colours = RasterColours(heatmap, cmap, NOT_SCORED_RGB)

    def render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return colours.raster(x, y, w, h, float(2**level))  # (h, w, 3)

    return render


class EncodedTiles:
    """Compressed tiles of the heatmap TIFF, each distinct tile compressed once.

    Call it as ``encoded(level, width, height, tile)`` (the ``encoded`` hook of
    :func:`~wsi_dram.slides.tiff_writer.write_pyramidal_tiff`): it yields the
    tiles of that level in TIFF order, byte-identical to compressing the tiles
    of :func:`heatmap_renderer` padded by edge repetition (the writer's own
    padding).

    Args:
        heatmap: The slide heatmap.
        cmap: Matplotlib colour map name.
        compression: ``"zlib"`` (zlib-wrapped deflate by libdeflate, as
            tifffile writes it) or ``"none"``.
        level: Deflate level 1-12 (1: flat tiles compress as well as at 6,
            faster).
        workers: Threads compressing new tiles.

    Attributes:
        compressed: Tiles compressed so far (distinct tiles).
        reused: Tiles whose bytes came from an identical earlier tile.
    """

    def __init__(
        self,
        heatmap: Heatmap,
        cmap: str = DEFAULT_CMAP,
        compression: str = "zlib",
        level: int = 1,
        workers: int = 2,
    ) -> None:
        if compression not in ("zlib", "deflate", "none"):
            raise ValueError(f"EncodedTiles cannot write {compression!r} tiles")
        self.heatmap = heatmap
        self.colours = RasterColours(heatmap, cmap, NOT_SCORED_RGB)
        self.compress = compression != "none"
        self.level = level
        self.workers = max(1, workers)
        self.compressed = 0
        self.reused = 0

    def cell_indices(
        self, n: int, tile: int, downsample: float, axis: int
    ) -> np.ndarray:
        """Padded-grid cell index of every pixel along one axis of a level.

        Args:
            n: Level size along the axis (pixels).
            tile: Tile side; the result is padded to a multiple of it by
                repeating the last index (the writer's edge padding).
            downsample: Level-0 pixels per level pixel.
            axis: 0 for x (columns), 1 for y (rows).

        Returns:
            (tiles, tile) intp: the index into ``RasterColours.index`` along
            that axis, 0 and ``cells + 1`` standing for "off the grid".
        """
        heat = self.heatmap
        origin = heat.cell_origin[axis]
        cells = heat.cols if axis == 0 else heat.rows
        centres = (np.arange(n) + 0.5) * downsample
        index = np.clip(np.floor((centres - origin) / heat.stride), -1, cells) + 1
        padded = np.pad(index.astype(np.intp), (0, -n % tile), mode="edge")
        return padded.reshape(-1, tile)

    def __call__(
        self, level: int, width: int, height: int, tile: int
    ) -> Iterator[bytes]:
        """Yield the compressed tiles of level ``level`` (``width x height``).

        Works one row of tiles at a time: describe every tile, compress the
        descriptions not seen before on ``workers`` threads, yield in order.
        """
        d = float(2**level)
        cols = self.cell_indices(width, tile, d, 0)  # (tiles x, tile)
        rows = self.cell_indices(height, tile, d, 1)  # (tiles y, tile)
        flat_x = (cols[:, 0] == cols[:, -1]).tolist()  # indices never decrease
        col_runs = [runs(c) for c in cols]
        index = self.colours.index
        done: dict[object, bytes] = {}
        with ThreadPoolExecutor(self.workers) as pool:
            for row in rows:
                row_runs = runs(row)
                flat_y = bool(row[0] == row[-1])
                flat_colours = index[row[0], cols[:, 0]].tolist()  # (tiles x,)
                keys: list[object] = []
                new: dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
                for tx, col_run in enumerate(col_runs):
                    if flat_y and flat_x[tx]:
                        key: object = flat_colours[tx]
                        if key not in done and key not in new:
                            one = np.array([tile])
                            new[key] = (one, one, np.array([[flat_colours[tx]]]))
                    else:
                        cells = index[np.ix_(row[row_runs[0]], cols[tx][col_run[0]])]
                        key = (row_runs[1].tobytes(), col_run[1].tobytes(),
                               cells.shape, cells.tobytes())  # fmt: skip
                        if key not in done and key not in new:
                            new[key] = (row_runs[1], col_run[1], cells)
                    keys.append(key)
                encoded = pool.map(self._encode, new.values(), [tile] * len(new))
                for key, data in zip(new, encoded, strict=True):
                    done[key] = data
                self.compressed += len(new)
                self.reused += len(keys) - len(new)
                for key in keys:
                    yield done[key]

    def _encode(
        self, parts: tuple[np.ndarray, np.ndarray, np.ndarray], tile: int
    ) -> bytes:
        """Compress a tile of ``cells`` (colour indices) repeated by the counts.

        ``parts`` is ``(row_counts, col_counts, cells)``: the (r, c) cells fill
        runs of ``row_counts[i]`` rows by ``col_counts[j]`` columns.
        """
        row_counts, col_counts, cells = parts
        colours = self.colours.lut[cells]  # (r, c, 3)
        pixels = np.empty((tile, tile, 3), np.uint8)
        y_edges = np.concatenate([[0], np.cumsum(row_counts)])
        x_edges = np.concatenate([[0], np.cumsum(col_counts)])
        for i in range(len(row_counts)):
            for j in range(len(col_counts)):
                pixels[y_edges[i] : y_edges[i + 1], x_edges[j] : x_edges[j + 1]] = (
                    colours[i, j]
                )
        if not self.compress:
            return pixels.tobytes()
        return bytes(imagecodecs.deflate_encode(pixels.tobytes(), level=self.level))


def write_heatmap_tiff(
    heatmap: Heatmap,
    path: str | Path,
    cmap: str = DEFAULT_CMAP,
    tile: int = 256,
    compression: str = "zlib",
    quality: int = 95,
) -> Path:
    """Write the colour-mapped heatmap as a tiled pyramidal TIFF.

    Levels are halved (level k is ``(width >> k, height >> k)``) until the long
    side is at most 512 px; the level-0 size is the slide's ``width x height`` and the
    resolution tags carry its mpp, so OpenSlide reports ``openslide.mpp-x``.

    Args:
        heatmap: The slide heatmap.
        path: Output file, normally ``<slide_id>.heatmap.tif``.
        cmap: Matplotlib colour map name.
        tile: Tile side in pixels.
        compression: ``"zlib"`` (lossless: the colours are exact and flat
            cells compress well), ``"jpeg"`` or ``"none"``.
        quality: JPEG quality (ignored otherwise).

    Returns:
        The written path.
    """
    from wsi_dram.slides.tiff_writer import write_pyramidal_tiff

    path = Path(path)
    encoded = (
        None if compression == "jpeg" else EncodedTiles(heatmap, cmap, compression)
    )
    levels = write_pyramidal_tiff(
        path,
        heatmap.width,
        heatmap.height,
        heatmap_renderer(heatmap, cmap),
        mpp=heatmap.mpp,
        tile=tile,
        compression=compression,
        quality=quality,
        description=f"wsi-dram tumour heatmap of {heatmap.slide_id} ({cmap})",
        encoded=encoded,
    )
    if encoded is not None:
        log.info(
            "wrote %s (%d levels, %d distinct tiles compressed, %d reused)",
            path,
            len(levels),
            encoded.compressed,
            encoded.reused,
        )
    else:
        log.info("wrote %s (%d levels)", path, len(levels))
    return path


def heatmap_label_array(heatmap: Heatmap, downsample: float) -> np.ndarray:
    """The heatmap as a uint8 raster for an NGFF label.

    Pixel ``(row, col)`` covers level-0 ``[col * d, (col + 1) * d)`` along x
    (same for y) and holds ``round(probability * 255)`` of the cell under its
    centre, 0 where not scored (so 0 also stands for probability < 1/510).

    Args:
        heatmap: The slide heatmap.
        downsample: Level-0 pixels per label pixel (``d``).

    Returns:
        (ceil(height / d), ceil(width / d)) uint8 array, ``(y, x)``.
    """
    h = max(1, math.ceil(heatmap.height / downsample))
    w = max(1, math.ceil(heatmap.width / downsample))
    probs = sample_raster(heatmap, 0, 0, w, h, downsample)  # (h, w)
    return np.round(np.nan_to_num(probs, nan=0.0) * 255).astype(np.uint8)


def write_heatmap_label(
    heatmap: Heatmap,
    store: str | Path,
    downsample: float,
    name: str = "heatmap",
    cmap: str = DEFAULT_CMAP,
) -> np.ndarray:
    """Store the heatmap as the NGFF label ``labels/<name>`` of a slide cache.

    Uses :func:`wsi_dram.cache.store.write_label`; the label colours are the
    colour map (value 0 transparent).

    Args:
        heatmap: The slide heatmap.
        store: The slide's ``.ome.zarr`` cache folder.
        downsample: Level-0 pixels per label pixel (e.g. the cache's mask
            downsample).
        name: Label name.
        cmap: Matplotlib colour map for the label's ``image-label.colors``.

    Returns:
        The (y, x) uint8 array that was stored.
    """
    from wsi_dram.cache.store import write_label

    array = heatmap_label_array(heatmap, downsample)
    lut = colour_lut(cmap)
    colours = {
        v: (int(lut[v, 0]), int(lut[v, 1]), int(lut[v, 2]), 255) for v in range(1, 256)
    }
    write_label(store, name, array, downsample, colors=colours)
    log.info(
        "stored label %s in %s (%dx%d)", name, store, array.shape[1], array.shape[0]
    )
    return array
