"""Benchmark of ``wsi-dram heatmap`` on a large synthetic slide against dense reads.

Run: ``python -m wsi_dram.benchmarks.heatmap OUT_DIR [SIDE]`` (or through ``make
bench``). It makes (once) one SIDE x SIDE synthetic tumour slide with
:func:`wsi_dram.synth.make_cohort` (default 100,000 px, 0.5 µm/px), caches it
with :func:`wsi_dram.cache.preprocess.preprocess` (reused when complete; not
timed), saves a freshly initialised DRAM with the model and grid of
``pipelines/synthetic.toml`` (2048 px fields, stride 2048, 6 glimpses of 32 px
at 3 scales; scoring speed and pixels read do not depend on the weights), then
runs, each in its own process so peak RSS is its own:

- ours: :func:`wsi_dram.export.run.run_heatmap` on the cache, every format
  (PNG, glimpses PNG/GIF, GeoJSON, XML, pyramidal TIFF, lesions, NGFF label);
- dense: a grid of 256 px level-0 patch reads over the same tissue: every 256 px
  square of level 0 whose tissue-label share is above 0 is read from the same
  cache (one ``read_region`` per 512 px chunk, 4 patches each), as a patch
  classifier's heatmap must at least do. No model runs in it, so its time is a
  lower bound for that approach.

Pixels read are level-0 tissue pixels under the finest glimpse windows (ours,
:attr:`SlideScores.pixels_read`) and under the patches (dense), both over the
cache's tissue label.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from wsi_dram.benchmarks.child import measure

SIDE = 100_000

_OURS = """
import logging
logging.basicConfig(level=logging.INFO)
from wsi_dram.export.run import run_heatmap
r = run_heatmap({store!r}, {ckpt!r}, {out!r})
s = r.scores
import numpy as np
np.savez({npz!r}, p=s.probabilities, origin=np.array(s.origin), stride=s.stride,
         field=s.field_size, width=s.width, height=s.height, mpp=s.mpp)
extra = {{"fields": len(s.fields), "pixels_read": s.pixels_read,
          "tissue_pixels": s.tissue_pixels, "score": s.score,
          "outputs": sorted(r.outputs)}}
"""

_DENSE = """
import numpy as np
from wsi_dram.cache.store import open_cache
slide = open_cache({store!r})
mask, d = slide.tissue_mask()
patch, block = 256, 512
ys, xs = np.nonzero(mask)
# Patch (i, j) covers level-0 [j*256, (j+1)*256) x [i*256, (i+1)*256); it is read
# when a tissue-label pixel lies in it. Blocks of 2 x 2 patches = one chunk read.
cells = np.unique(np.stack([(ys * d) // patch, (xs * d) // patch], 1), axis=0)
blocks = np.unique(cells // (block // patch), axis=0)
checksum = 0
for by, bx in blocks:
    region = slide.read_region(int(bx * block), int(by * block), 0, block, block)
    checksum += int(region[block // 2, block // 2, 0])
extra = {{"patches": int(len(cells)), "blocks": int(len(blocks)),
          "pixels_read": int(len(cells)) * patch * patch}}
"""

_TIFF = """
import numpy as np
from wsi_dram.export.heatmap import Heatmap
from wsi_dram.export.tiff import heatmap_renderer, write_heatmap_tiff
from wsi_dram.slides.tiff_writer import write_pyramidal_tiff
z = np.load({npz!r})
h = Heatmap(z["p"], tuple(z["origin"]), float(z["stride"]), float(z["field"]),
            int(z["width"]), int(z["height"]), float(z["mpp"]), "bench", None)
if {encoded!r}:
    write_heatmap_tiff(h, {out!r})
else:  # every tile rendered and zlib-compressed by tifffile (the writer before)
    write_pyramidal_tiff({out!r}, h.width, h.height, heatmap_renderer(h),
                         mpp=h.mpp, compression="zlib")
extra = {{}}
"""


def _child(body: str) -> dict[str, Any]:
    return measure(body)


def make_inputs(out_dir: Path, side: int) -> tuple[Path, Path]:
    """The synthetic slide's cache and a fresh checkpoint (made once)."""
    from wsi_dram.cache.preprocess import PreprocessOptions, preprocess
    from wsi_dram.cache.store import is_complete, store_path
    from wsi_dram.synth import make_cohort

    cohort = out_dir / "cohort"
    slides = sorted(cohort.glob("*.tif"))
    if not slides:
        make_cohort(cohort, slides=1, size=(side, side), seed=5, tumour_fraction=1.0)
        slides = sorted(cohort.glob("*.tif"))
    cache = out_dir / "cache"
    store = store_path(cache, slides[0].stem)
    if not is_complete(store):
        (row,) = preprocess(slides, cache, None, PreprocessOptions(qc=False))
        if row.status == "failed":
            raise RuntimeError(row.error)
    ckpt = out_dir / "fresh_synthetic.pt"
    if not ckpt.exists():
        save_fresh_checkpoint(ckpt)
    return store, ckpt


def save_fresh_checkpoint(path: Path) -> None:
    """An untrained DRAM with the model and grid of ``pipelines/synthetic.toml``."""
    import torch

    from wsi_dram.model.dram import DRAM
    from wsi_dram.training.checkpoints import save_checkpoint
    from wsi_dram.training.config import TrainConfig

    config = TrainConfig()
    config.task.kind = "slide_regions"
    config.task.options = {
        "labels": "labels.csv",
        "field_size": 2048,
        "score_stride": 2048,
        "eval_batch_size": 64,
    }
    m = config.model
    m.glimpses, m.glimpse_size, m.scales, m.context_size = 6, 32, 3, 32
    m.layers, m.context, m.first, m.hidden = 2, True, "context", 256
    m.conv_channels, m.context_channels = [16, 32], [16, 32]
    torch.manual_seed(0)
    model = DRAM(m, 3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    save_checkpoint(path, model, optimizer, scheduler, 0, config, 2, 3, {}, 0.0)


def run(out_dir: Path, side: int = SIDE, tiff_baseline: bool = True) -> str:
    """Measure and return the Markdown section for BENCHMARKS.md.

    Args:
        out_dir: Work folder (slide, cache, checkpoint, outputs).
        side: Slide side in px.
        tiff_baseline: Also time the heatmap TIFF written the way it was
            before (every tile rendered and compressed; minutes at 100k).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Inputs in a child too: Linux keeps a process's peak RSS across fork and
    # exec, so a parent that preprocessed in-process would lend its peak to
    # every contender.
    made = _child(
        "from wsi_dram.benchmarks.heatmap import make_inputs\n"
        f"store, ckpt = make_inputs(__import__('pathlib').Path({str(out_dir)!r}), "
        f"{side})\n"
        "extra = {'store': str(store), 'ckpt': str(ckpt)}"
    )
    store, ckpt = Path(made["store"]), Path(made["ckpt"])
    npz = out_dir / "heatmap.npz"
    ours = _child(
        _OURS.format(
            store=str(store), ckpt=str(ckpt), out=str(out_dir / "out"), npz=str(npz)
        )
    )
    dense = _child(_DENSE.format(store=str(store)))
    tissue = ours["tissue_pixels"]
    ours_frac = ours["pixels_read"] / tissue
    dense_frac = 1.0  # every tissue pixel lies in a read patch
    rows = [
        (
            "wsi-dram heatmap (score + every format)",
            ours,
            ours["pixels_read"],
            ours_frac,
        ),
        (
            "dense 256 px patch reads (no model)",
            dense,
            dense["pixels_read"],
            dense_frac,
        ),
    ]
    lines = [
        "## Slide heatmaps",
        "",
        f"Synthetic tumour slide {side:,} x {side:,} px (0.5 µm/px, "
        f"{tissue / 1e6:,.0f} tissue MP); model and grid of "
        f"`pipelines/synthetic.toml` (fresh weights), {ours['fields']} fields of "
        "2048 px; 2 cores; each contender in its own process.",
        "",
        "| contender | wall s | CPU s | peak RSS MiB | level-0 px read "
        "| % of tissue px |",
        "|---|---|---|---|---|---|",
    ]
    for name, r, px, frac in rows:
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_mib']:.0f} | "
            f"{px:,} | {100 * frac:.3f} |"
        )
    lines += [
        "",
        f"Ours reads {dense['pixels_read'] / max(ours['pixels_read'], 1):,.0f}x fewer "
        f"level-0 pixels and takes {ours['seconds'] / dense['seconds']:.2f}x the "
        "wall time of the dense reads alone.",
    ]
    tiffs = [("each distinct tile compressed once (now)", True)]
    if tiff_baseline:
        tiffs.append(("every tile rendered + compressed (before)", False))
    lines += [
        "",
        "Heatmap TIFF alone (same heatmap, zlib, 256 px tiles, full pyramid):",
        "",
        "| writer | wall s | CPU s | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for name, encoded in tiffs:
        out = out_dir / f"tiff_{'now' if encoded else 'before'}.tif"
        r = _child(_TIFF.format(npz=str(npz), encoded=encoded, out=str(out)))
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench_out/heatmap")
    size = int(sys.argv[2]) if len(sys.argv) > 2 else SIDE
    print(run(target, size))
