"""The tissue tile grid (``<slide_id>.h5``) in the layout CLAM uses, and label rasters.

File layout (HDF5)::

    coords            (N, 2) int64   level-0 (x, y) top-left of each tile
      attrs           patch_size (pixels at patch_level), patch_level,
                      level_dim (w, h at patch_level), downsample, mpp
    tissue_fraction   (N,) float32   share of the tile covered by tissue
    tumor_fraction    (N,) float32   share covered by the tumour geometry (0 when
                                     the slide has no annotation)

Fractions are measured on the label rasters at ``mask_level`` of the cache (the
tile's footprint in label pixels, rounded outwards), so they are exact to one label
pixel. Tiles are kept when their tissue fraction is at least ``min_tissue``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from skimage.draw import polygon as draw_polygon

from wsi_dram.errors import CacheError


@dataclass
class TileIndex:
    """A slide's tile grid.

    Attributes:
        coords: (N, 2) int64 level-0 (x, y) top-left corners.
        patch_size: Tile side in pixels at ``patch_level``.
        patch_level: Cache level the tile size refers to (side in level-0 px is
            ``patch_size * 2**patch_level``).
        tissue_fraction: (N,) float32 in [0, 1].
        tumor_fraction: (N,) float32 in [0, 1].
        attrs: Every attribute stored on ``coords``.
    """

    coords: np.ndarray
    patch_size: int
    patch_level: int
    tissue_fraction: np.ndarray
    tumor_fraction: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def rasterize(geometry: Any, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Rasterise a shapely (Multi)Polygon given in level-0 px onto a label grid.

    A label pixel (row, col) covers level-0 x in ``[col * d, (col + 1) * d)``; it is
    set when its centre lies inside the geometry (holes excluded).

    Args:
        geometry: Polygon, MultiPolygon or GeometryCollection (level-0 px, (x, y)).
        shape: (h, w) of the raster.
        downsample: Level-0 pixels per raster pixel.

    Returns:
        uint8 (h, w) with 1 inside, 0 outside.
    """
    out = np.zeros(shape, np.uint8)
    if geometry is None or geometry.is_empty:
        return out
    polys = [
        g for g in getattr(geometry, "geoms", [geometry]) if g.geom_type == "Polygon"
    ]
    for sub in getattr(geometry, "geoms", []):
        if sub.geom_type == "MultiPolygon":
            polys.extend(sub.geoms)
    # Larger polygons first, so an island inside another polygon's hole survives.
    for poly in sorted(polys, key=lambda p: -p.area):
        for ring, value in [(poly.exterior, 1), *[(r, 0) for r in poly.interiors]]:
            xy = np.asarray(ring.coords, dtype=np.float64)
            rows, cols = draw_polygon(
                xy[:, 1] / downsample - 0.5, xy[:, 0] / downsample - 0.5, shape
            )
            out[rows, cols] = value
    return out


def resample_mask(
    mask: np.ndarray, mask_downsample: float, shape: tuple[int, int], downsample: float
) -> np.ndarray:
    """Nearest-neighbour resample of a bool mask onto another grid (uint8 0/1).

    Args:
        mask: (h, w) bool, pixel (r, c) covers level-0 ``[c * md, (c + 1) * md)``.
        mask_downsample: Level-0 pixels per mask pixel (``md``).
        shape: (h, w) of the output grid.
        downsample: Level-0 pixels per output pixel.
    """
    rows = ((np.arange(shape[0]) + 0.5) * downsample / mask_downsample).astype(np.int64)
    cols = ((np.arange(shape[1]) + 0.5) * downsample / mask_downsample).astype(np.int64)
    inside_r, inside_c = rows < mask.shape[0], cols < mask.shape[1]
    out = np.zeros(shape, np.uint8)
    sub = mask[np.ix_(rows[inside_r], cols[inside_c])]
    out[np.ix_(inside_r, inside_c)] = sub.astype(np.uint8)
    return out


def _box_means(label: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean of ``label`` over boxes (N, 4) = (c0, r0, c1, r1), via an integral image."""
    integral = np.zeros((label.shape[0] + 1, label.shape[1] + 1), np.int64)
    integral[1:, 1:] = (label > 0).cumsum(0).cumsum(1)
    c0, r0, c1, r1 = boxes.T
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    area = np.maximum((c1 - c0) * (r1 - r0), 1)
    return (total / area).astype(np.float32)


def tile_grid(
    width: int,
    height: int,
    tissue_label: np.ndarray,
    tumor_label: np.ndarray | None,
    label_downsample: float,
    patch_size: int = 256,
    patch_level: int = 0,
    min_tissue: float = 0.25,
) -> TileIndex:
    """Non-overlapping tiles of the slide whose tissue fraction >= ``min_tissue``.

    Args:
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        tissue_label: (h, w) tissue raster (non-zero = tissue).
        tumor_label: Tumour raster on the same grid, or None.
        label_downsample: Level-0 pixels per label pixel.
        patch_size: Tile side at ``patch_level``.
        patch_level: Level of ``patch_size`` (factor 2**patch_level).
        min_tissue: Smallest tissue fraction kept.

    Returns:
        The grid; tiles lie fully inside the slide.
    """
    side = patch_size * 2**patch_level
    xs = np.arange(0, width - side + 1, side, dtype=np.int64)
    ys = np.arange(0, height - side + 1, side, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (N, 2) level-0 (x, y)
    h, w = tissue_label.shape
    c0 = np.clip(np.floor(coords[:, 0] / label_downsample), 0, w).astype(np.int64)
    r0 = np.clip(np.floor(coords[:, 1] / label_downsample), 0, h).astype(np.int64)
    c1 = np.clip(np.ceil((coords[:, 0] + side) / label_downsample), 0, w).astype(
        np.int64
    )
    r1 = np.clip(np.ceil((coords[:, 1] + side) / label_downsample), 0, h).astype(
        np.int64
    )
    boxes = np.stack([c0, r0, c1, r1], axis=1)
    tissue = _box_means(tissue_label, boxes) if len(coords) else np.zeros(0, np.float32)
    keep = tissue >= min_tissue if min_tissue > 0 else tissue > 0
    if tumor_label is not None and len(coords):
        tumor = _box_means(tumor_label, boxes)
    else:
        tumor = np.zeros(len(coords), np.float32)
    return TileIndex(
        coords=coords[keep].astype(np.int64),
        patch_size=int(patch_size),
        patch_level=int(patch_level),
        tissue_fraction=tissue[keep],
        tumor_fraction=tumor[keep],
        attrs={
            "patch_size": int(patch_size),
            "patch_level": int(patch_level),
            "downsample": float(2**patch_level),
            "level_dim": [int(width // 2**patch_level), int(height // 2**patch_level)],
            "min_tissue_fraction": float(min_tissue),
        },
    )


def write_tiles(
    path: str | Path, index: TileIndex, extra_attrs: dict[str, Any] | None = None
) -> None:
    """Write the tile grid to ``path`` (temporary name, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset(
            "coords", data=index.coords.astype(np.int64).reshape(-1, 2)
        )
        for key, value in {**index.attrs, **(extra_attrs or {})}.items():
            dset.attrs[key] = value
        f.create_dataset(
            "tissue_fraction", data=index.tissue_fraction.astype(np.float32)
        )
        f.create_dataset("tumor_fraction", data=index.tumor_fraction.astype(np.float32))
    os.replace(tmp, path)


def read_tiles(path: str | Path) -> TileIndex:
    """Read a tile grid written by :func:`write_tiles` (or a CLAM coords file).

    A CLAM file without fraction datasets gets NaN fractions.

    Raises:
        CacheError: When the file is missing or has no ``coords`` dataset.
    """
    path = Path(path)
    if not path.exists():
        raise CacheError("no such tile file (run `wsi-dram preprocess` first)", path)
    try:
        with h5py.File(path, "r") as f:
            dset = f["coords"]
            coords = np.asarray(dset[...], dtype=np.int64).reshape(-1, 2)
            attrs = {k: _plain(v) for k, v in dset.attrs.items()}
            n = coords.shape[0]
            nan = np.full(n, np.nan, np.float32)
            tissue = (
                np.asarray(f["tissue_fraction"][...], np.float32)
                if "tissue_fraction" in f
                else nan
            )
            tumor = (
                np.asarray(f["tumor_fraction"][...], np.float32)
                if "tumor_fraction" in f
                else nan
            )
    except (OSError, KeyError) as exc:
        raise CacheError(f"not a readable tile file: {exc}", path) from exc
    return TileIndex(
        coords=coords,
        patch_size=int(attrs.get("patch_size", 0)),
        patch_level=int(attrs.get("patch_level", 0)),
        tissue_fraction=tissue,
        tumor_fraction=tumor,
        attrs=attrs,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def label_shape(width: int, height: int, level: int) -> tuple[int, int]:
    """(h, w) of a label raster at cache level ``level``."""
    return max(1, height // 2**level), max(1, width // 2**level)


def mask_level_for(
    mpp: float, mask_mpp: float, patch_side: int, level_count: int
) -> int:
    """Label level: pixel size closest below ``mask_mpp``, >= 4 px per tile side."""
    target = max(0, int(math.floor(math.log2(max(mask_mpp / mpp, 1.0)))))
    finest_for_tiles = max(0, int(math.floor(math.log2(max(patch_side / 4, 1)))))
    return int(min(target, finest_for_tiles, max(level_count - 1, 0) + 8))


__all__ = [
    "TileIndex",
    "label_shape",
    "mask_level_for",
    "rasterize",
    "read_tiles",
    "resample_mask",
    "tile_grid",
    "write_tiles",
]
