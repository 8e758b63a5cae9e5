"""Small slides and pyramid runs shared by the cache tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from wsi_dram.cache import pyramid, store


def ramp_rgb(height: int, width: int) -> np.ndarray:
    """A known (h, w, 3) uint8 pattern where every pixel differs from its neighbours."""
    idx = np.arange(height * width, dtype=np.uint32).reshape(height, width)
    r = (idx % 251 + 1).astype(np.uint8)
    g = ((idx // 7) % 241).astype(np.uint8)
    b = ((idx * 13) % 239).astype(np.uint8)
    return np.stack([r, g, b], axis=2)


def write_tiff(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    """A single-level tiled RGB TIFF that OpenSlide opens with mpp set."""
    tifffile.imwrite(
        path,
        rgb,
        tile=(256, 256),
        photometric="rgb",
        resolution=(1e4 / mpp, 1e4 / mpp),
        resolutionunit="CENTIMETER",
    )
    return path


def build_full(
    slide_path: Path,
    out: Path,
    mpp: float | None = None,
    chunk: int = 256,
    block: int = 512,
    min_side: int = 32,
    scheduler: Any = None,
    workers: int = 2,
    codec: str = "zstd",
) -> list[np.ndarray]:
    """Write all chunks of all levels (mask all ones); return (h, w, 3) levels."""
    from wsi_dram.slides.reader import open_slide

    with open_slide(slide_path, mpp=mpp) as slide:
        n = store.level_count_for(slide.width, slide.height, min_side)
        store.create_image_store(
            out,
            slide.slide_id,
            slide.width,
            slide.height,
            slide.mpp,
            slide.mpp_y,
            n,
            chunk,
            codec,
        )
        mask = np.ones((8, 8), bool)
        ds = max(slide.width, slide.height) / 8
        plan = pyramid.plan_blocks(
            slide.width, slide.height, n, slide.level_factors, mask, ds, chunk, block, 0
        )
        pyramid.write_levels(plan, out, slide_path, mpp, scheduler, workers)
    import zarr

    root = zarr.open_group(str(out), mode="r", zarr_format=2)
    return [np.asarray(root[str(k)][...]).transpose(1, 2, 0) for k in range(n)]
