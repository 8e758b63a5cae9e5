"""ROC and FROC curves as PNG files (matplotlib, Agg canvas, no pyplot state).

Every figure is ``size_px`` by ``size_px`` pixels and is written under a
temporary name, then renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsi_dram.evaluation.froc import FROC_RATES, sensitivity_at
from wsi_dram.evaluation.slide_metrics import roc_auc, roc_curve

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)
    return path


def _figure(size_px: int) -> Figure:
    return Figure(figsize=(size_px / DPI, size_px / DPI), dpi=DPI, layout="constrained")


def plot_roc(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    path: Path,
    *,
    title: str = "Slide-level ROC",
    auc_ci: tuple[float, float] | None = None,
    threshold: float | None = None,
    size_px: int = 600,
) -> Path:
    """Write the slide-level ROC curve, with the AUC (and interval) in the legend.

    Args:
        labels, scores: One per slide (1 tumour, 0 normal).
        path: Output PNG.
        title: Figure title.
        auc_ci: Bootstrap interval to print beside the AUC.
        threshold: When given, the operating point ``score >= threshold`` is
            marked on the curve.
        size_px: Width and height of the PNG in pixels.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc(labels, scores)
    text = f"AUC {auc:.3f}"
    if auc_ci is not None:
        text += f" [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]"

    fig = _figure(size_px)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, drawstyle="default", color="#c0392b", lw=2, label=text)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    if threshold is not None:
        y = np.asarray(labels)
        called = np.asarray(scores, dtype=np.float64) >= threshold
        op_fpr = float(called[y == 0].mean())
        op_tpr = float(called[y == 1].mean())
        ax.plot(op_fpr, op_tpr, "o", color="black", label=f"threshold {threshold:.3g}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (normal slides called tumour)")
    ax.set_ylabel("Sensitivity (tumour slides found)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_froc(
    fps_per_slide: np.ndarray,
    sensitivity: np.ndarray,
    path: Path,
    *,
    rates: Sequence[float] = FROC_RATES,
    title: str = "Lesion-level FROC",
    size_px: int = 600,
) -> Path:
    """Write the FROC curve (log x axis) with the sensitivities read at ``rates``.

    Args:
        fps_per_slide, sensitivity: The curve from
            :func:`wsi_dram.evaluation.froc.froc_curve`.
        path: Output PNG.
        rates: False positives per slide marked on the curve.
        title: Figure title.
        size_px: Width and height of the PNG in pixels.
    """
    xs = np.asarray(fps_per_slide, dtype=np.float64)[::-1]
    ys = np.asarray(sensitivity, dtype=np.float64)[::-1]
    marks = sensitivity_at(fps_per_slide, sensitivity, rates)
    score = float(np.mean(marks))

    fig = _figure(size_px)
    ax = fig.add_subplot()
    # The log axis cannot show x = 0; clip the curve's left end just below the
    # first rate so its shape there stays visible.
    left = min(rates) / 2
    ax.plot(np.maximum(xs, left), ys, color="#2c3e50", lw=2, label=f"FROC {score:.3f}")
    ax.plot(rates, marks, "o", color="#c0392b", label="read at 1/4..8 FP/slide")
    ax.set_xscale("log", base=2)
    ax.set_xlim(left, max(max(rates) * 1.5, float(xs.max()) if xs.size else 1.0))
    ax.set_ylim(-0.01, 1.01)
    ax.set_xticks(list(rates), [f"{r:g}" for r in rates])
    ax.set_xlabel("Average false positives per slide")
    ax.set_ylabel("Lesion sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)
