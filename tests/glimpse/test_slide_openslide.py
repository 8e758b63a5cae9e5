"""Windows from a preprocessed cache against OpenSlide ``read_region`` on the source.

Two slides go through the real preprocessing stage: the shared generic TIFF
``wsp_example.tif`` and a small synthetic pyramidal TIFF with odd dimensions. Every
window of every glimpse is compared with OpenSlide reading the source level of the
same factor at the same level-0 corner: pixels inside the level and in a written
chunk agree (exactly with the lossless codec, within the codec's loss with JPEG);
pixels outside the level, or in chunks left unwritten (background), are white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from tests.conftest import DATA, need
from wsi_dram.glimpse.chunks import ChunkCache, level_reader
from wsi_dram.glimpse.slide import read_windows, window_origins

GLIMPSE = 32
SYNTH_SIZE = (1501, 1203)


def synth_render(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Pink textured tissue on the left two thirds, white background elsewhere."""
    f = 2**level
    xs = (x + np.arange(w) + 0.5) * f
    ys = (y + np.arange(h) + 0.5) * f
    gx, gy = np.meshgrid(xs, ys)
    tissue = (gx - 600) ** 2 / 500**2 + (gy - 600) ** 2 / 450**2 < 1
    texture = 30 * np.sin(gx / 9.0) * np.cos(gy / 13.0)
    rgb = np.stack([200 + 0.5 * texture, 120 + texture, 170 + 0.8 * texture], -1)
    rgb = np.where(tissue[..., None], rgb, 250.0)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from wsi_dram.slides.tiff_writer import write_pyramidal_tiff

    wsp = need(DATA / "slides" / "generic-tiff" / "wsp_example.tif")
    synth = tmp_path_factory.mktemp("synth") / "synth_odd.tif"
    write_pyramidal_tiff(synth, *SYNTH_SIZE, synth_render, mpp=0.5, tile=128)
    return {"wsp_example": wsp, "synth_odd": synth}


@pytest.fixture(scope="module", params=["zstd", "jpeg"])
def caches(
    request: pytest.FixtureRequest,
    sources: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, Path]]:
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess

    codec = request.param
    out = tmp_path_factory.mktemp(f"cache_{codec}")
    options = PreprocessOptions(chunk=128, block=256, codec=codec, qc=False)
    rows = preprocess(list(sources.values()), out, options=options)
    assert [row.status for row in rows] != ["failed"] * len(rows), rows
    failed = [row for row in rows if row.status == "failed"]
    assert not failed, failed
    return codec, {sid: out / f"{sid}.ome.zarr" for sid in sources}


def centres_for(width: int, height: int, seed: int) -> np.ndarray:
    """Corners, edge midpoints, points just outside, and random points."""
    fixed = [
        (0, 0), (width, 0), (0, height), (width, height),
        (width // 2, 0), (0, height // 2), (width - 3, height // 2),
        (width // 2, height + 5), (-20, -20), (width // 3, height // 3),
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    rand = rng.uniform([-40, -40], [width + 40, height + 40], size=(40, 2))
    return np.concatenate([np.array(fixed, dtype=np.float64), rand])


def openslide_window(
    handle: openslide.OpenSlide, level: int, x: int, y: int, g: int
) -> np.ndarray:
    """(3, g, g) of the source level at that level's (x, y), composited on white.

    OpenSlide takes the level-0 corner and divides it by the level's reported
    downsample (2.0015 for a 1501 x 1203 slide's level 1, where it then
    resamples by a fraction of a pixel); the nearest level-0 corner is used.
    """
    factor = handle.level_downsamples[level]
    corner = (round(x * factor), round(y * factor))
    rgba = np.asarray(handle.read_region(corner, level, (g, g)))
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)) // 255
    return rgb.astype(np.uint8).transpose(2, 0, 1)


@pytest.mark.parametrize("slide_id", ["wsp_example", "synth_odd"])
def test_windows_match_openslide(
    caches: tuple[str, dict[str, Path]], sources: dict[str, Path], slide_id: str
) -> None:
    from wsi_dram.cache.store import open_cache

    codec, stores = caches
    cached = open_cache(stores[slide_id])
    handle = openslide.OpenSlide(str(sources[slide_id]))
    # Cache levels with a source level of the same size (copied, not resampled,
    # by preprocessing).
    source_level = {
        k: handle.level_dimensions.index((cached.width >> k, cached.height >> k))
        for k in range(cached.level_count)
        if (cached.width >> k, cached.height >> k) in handle.level_dimensions
    }
    scales = 1
    while scales in source_level and scales < 3:
        scales += 1
    assert scales >= 2, (slide_id, source_level)

    centres = centres_for(cached.width, cached.height, seed=len(slide_id))
    ours = read_windows(cached.levels, centres, GLIMPSE, scales, 0, ChunkCache())
    origins = window_origins(centres, GLIMPSE, scales, 0)

    compared, diffs, edge_windows = 0, [], 0
    for k in range(scales):
        # Exact where OpenSlide reads exact pixels: lossless codec, factor 2**k.
        exact = codec == "zstd" and handle.level_downsamples[source_level[k]] == 2**k
        level = cached.levels[k]
        reader = level_reader(level)
        height, width = level.shape[1:]
        for i in range(len(centres)):
            x, y = (int(v) for v in origins[i, k])
            window = ours[i, k]
            theirs = openslide_window(handle, source_level[k], x, y, GLIMPSE)
            rows = np.arange(y, y + GLIMPSE)[:, None]
            cols = np.arange(x, x + GLIMPSE)[None, :]
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            written = np.zeros_like(inside)
            for r in range(max(y, 0) // 128, min(y + GLIMPSE, height) // 128 + 1):
                for c in range(max(x, 0) // 128, min(x + GLIMPSE, width) // 128 + 1):
                    if Path(reader.chunk_path(r, c)).exists():
                        written |= (rows // 128 == r) & (cols // 128 == c)
            written &= inside
            if not inside.all():
                edge_windows += 1
            assert (window[:, ~inside] == 255).all(), (slide_id, i, k)
            assert (window[:, inside & ~written] == 255).all(), (slide_id, i, k)
            if written.any():
                diff = np.abs(window[:, written].astype(np.int16) - theirs[:, written])
                if exact:
                    assert diff.max() == 0, (slide_id, i, k)
                diffs.append(diff.mean())
                compared += int(written.sum())
    assert edge_windows >= 8 and compared >= 20 * GLIMPSE * GLIMPSE
    assert float(np.mean(diffs)) <= 3.0
