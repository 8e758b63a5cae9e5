"""Slide-level evaluation of a slide-task checkpoint (Camelyon16 protocol).

:func:`evaluate_slides` scores every slide of a split with
:func:`~wsi_dram.evaluation.scoring.score_slide` and writes, in the folder of
``report.json``:

* ``report.json``: ``auc``, ``auc_ci`` (stratified bootstrap), ``accuracy``,
  ``sensitivity``, ``specificity``, ``threshold`` (Youden's J on the val slides
  when evaluating "test", else 0.5), ``froc`` and ``froc_sensitivities`` (when
  a tumour slide has lesion geometry), ``pixels_read_fraction`` (level-0 tissue
  pixels read / tissue pixels, over all slides), ``n_slides`` and more;
* ``predictions.csv``: ``slide_id,label,score``;
* ``lesions/<slide_id>.csv``: ``confidence,X,Y`` (level 0, no header): each
  field at or above ``lesion_threshold`` placed where its glimpses found the
  evidence, candidates within ``lesion_merge_um`` merged;
* ``roc.png`` and ``froc.png``.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_dram.errors import DataError
from wsi_dram.evaluation.froc import EvaluationMask, evaluation_mask_from_geometry
from wsi_dram.evaluation.lesions import write_detections_csv
from wsi_dram.evaluation.plots import plot_froc, plot_roc
from wsi_dram.evaluation.scoring import SlideScores, options_from_task, score_slide
from wsi_dram.evaluation.slide_metrics import froc_report, roc_auc, slide_report
from wsi_dram.jsontext import strict_json
from wsi_dram.model.dram import DRAM, Policy

log = logging.getLogger(__name__)


@dataclass
class ScoredSlide:
    """A slide of a split with its label and scores."""

    slide_id: str
    label: int | None
    scores: SlideScores


def score_split(
    model: DRAM,
    task: Any,
    split: str,
    policy: Policy = "learned",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    skip: dict[str, str] | None = None,
) -> list[ScoredSlide]:
    """Score every slide of a split of a slide task (RegionTask / WholeSlideTask).

    Args:
        model: The model.
        task: The slide task (its ``[task.options]`` give the grid).
        split: "train", "val" or "test".
        policy: Glimpse policy.
        seed: Seeds random glimpses.
        device: Where the model runs.
        progress: Called with (slides done, slides).
        skip: slide_id -> reason of slides left out.
    """
    from wsi_dram.data.slide_tasks import WholeSlideTask

    options = options_from_task(task.opts, isinstance(task, WholeSlideTask))
    slides = [s for s in task.split_slides(split) if s.slide_id not in (skip or {})]
    out = []
    for i, slide in enumerate(slides):
        scores = score_slide(model, slide.cache, options, policy, seed, device)
        out.append(ScoredSlide(slide.slide_id, slide.label, scores))
        if progress is not None:
            progress(i + 1, len(slides))
    return out


def pixels_read_fraction(scored: list[ScoredSlide]) -> float:
    """Level-0 tissue px read over all slides / their tissue px."""
    tissue = sum(s.scores.tissue_pixels for s in scored)
    return sum(s.scores.pixels_read for s in scored) / tissue if tissue else 0.0


#: Score margin of :func:`selection_value`'s margin AUC.
SELECTION_MARGIN = 0.1


def margin_auc(labels: np.ndarray, scores: np.ndarray, margin: float) -> float:
    """AUC in which a (tumour, normal) pair counts fully only beyond a margin.

    Each pair contributes ``(1 + clip((s_tumour - s_normal) / margin, -1, 1)) / 2``:
    1 when the tumour slide scores at least ``margin`` above the normal one, 0 when
    it scores ``margin`` below, linearly between. It equals the ROC AUC when every
    pair is ordered with room to spare, and stays near 0.5 for a model whose
    scores barely differ, however they happen to be ordered.
    """
    tumour = scores[labels == 1][:, None]
    normal = scores[labels == 0][None, :]
    if tumour.size == 0 or normal.size == 0:
        raise ValueError("margin_auc needs both classes")
    return float(((1 + np.clip((tumour - normal) / margin, -1, 1)) / 2).mean())


def selection_value(scored: list[ScoredSlide]) -> dict[str, Any]:
    """Validation figures for model selection.

    Returns:
        ``auc``, ``margin_auc`` (:func:`margin_auc` with :data:`SELECTION_MARGIN`),
        ``pixels_read_fraction``, ``n_slides`` and ``selection``: the margin AUC
        (or, when only one class is present, the share of slides called right at
        0.5). With the handful of validation slides of a small cohort the plain
        AUC is often 1.0 by luck for an untrained model whose scores differ by
        hundredths; the margin AUC gives such a model about 0.5, and equals the
        AUC for a model that separates the slides clearly.
    """
    labels = np.array([s.label for s in scored], np.int64)
    scores = np.array([s.scores.score for s in scored], np.float64)
    auc: float | None = None
    soft: float | None = None
    if len(set(labels.tolist())) == 2:
        auc = roc_auc(labels, scores)
        soft = margin_auc(labels, scores, SELECTION_MARGIN)
    selection = soft if soft is not None else float(((scores >= 0.5) == labels).mean())
    return {
        "auc": auc,
        "margin_auc": soft,
        "pixels_read_fraction": pixels_read_fraction(scored),
        "n_slides": len(scored),
        "selection": selection,
    }


def _masks(
    task: Any, scored: list[ScoredSlide], skip: dict[str, str]
) -> dict[str, EvaluationMask | None]:
    slides = {
        s.slide_id: s
        for split in ("train", "val", "test")
        for s in task.split_slides(split)
    }
    masks: dict[str, EvaluationMask | None] = {}
    for s in scored:
        if s.slide_id in skip:
            continue
        cache = slides[s.slide_id].cache
        geometry = cache.tumor_geometry
        if s.label == 0:
            masks[s.slide_id] = None
        elif geometry is not None and not geometry.is_empty:
            masks[s.slide_id] = evaluation_mask_from_geometry(
                geometry, (cache.width, cache.height), mpp=cache.mpp
            )
        else:
            log.info("%s: tumour slide without lesion outline, not in FROC", s.slide_id)
    return masks


def evaluate_slides(
    model: DRAM,
    task: Any,
    split: str,
    report_path: Path,
    policy: Policy = "learned",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
    n_bootstrap: int = 2000,
) -> dict[str, Any]:
    """Evaluate a slide-task model on a split and write the files (module doc).

    Args:
        model: The model.
        task: The slide task built from the checkpoint's config.
        split: The split evaluated ("test": threshold by Youden on "val").
        report_path: Where ``report.json`` goes; the other files go beside it.
        policy: Glimpse policy ("random" / "center" ablate the learned one).
        seed: Seeds random glimpses and the bootstrap.
        device: Where the model runs.
        progress: Called with (stage, done, total).
        n_bootstrap: Bootstrap replicates of the AUC interval.

    Returns:
        The report (also written to ``report_path``).

    Raises:
        DataError: A slide of the split has no label (e.g. Camelyon16 test
            slides without the organisers' reference file).
    """
    started = time.perf_counter()
    opts = task.opts
    skip = dict(opts.exclude_slide_scoring)
    unlabelled = [s.slide_id for s in task.split_slides(split) if s.label is None]
    if unlabelled and any(s not in skip for s in unlabelled):
        raise DataError(
            f"{len(unlabelled)} {split} slides have no label (e.g. {unlabelled[0]}); "
            "set task.options.reference to the organisers' reference.csv",
            opts.cohort or opts.labels,
        )

    def stage(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    scored = score_split(model, task, split, policy, seed, device, stage(split), skip)
    validation = None
    if split == "test" and task.split_slides("val"):
        val = score_split(model, task, "val", policy, seed, device, stage("val"))
        validation = ([int(s.label or 0) for s in val], [s.scores.score for s in val])
        if len(set(validation[0])) < 2:
            validation = None

    labels = [int(s.label) for s in scored if s.label is not None]
    scores = [s.scores.score for s in scored]
    report = slide_report(
        labels, scores, validation=validation, n_bootstrap=n_bootstrap, seed=seed
    )

    out_dir = Path(report_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    detections = {}
    for s in scored:
        sc = s.scores
        found = sc.lesions(opts.lesion_threshold, opts.lesion_merge_um)
        detections[s.slide_id] = found
        (out_dir / "lesions").mkdir(exist_ok=True)
        write_detections_csv(out_dir / "lesions" / f"{s.slide_id}.csv", found)
    _write_predictions(out_dir / "predictions.csv", scored)

    lesion_skip = dict(opts.exclude_lesion_scoring)
    masks = _masks(task, scored, lesion_skip)
    froc: dict[str, Any] = {"froc": None, "froc_sensitivities": None}
    if any(m is not None for m in masks.values()):
        froc = froc_report({k: detections[k] for k in masks}, masks)
        from wsi_dram.evaluation.froc import evaluate_froc

        curve = evaluate_froc({k: detections[k] for k in masks}, masks)
        plot_froc(curve.fps_per_slide, curve.sensitivity, out_dir / "froc.png")
    if report.get("auc") is not None:
        plot_roc(
            labels,
            scores,
            out_dir / "roc.png",
            auc_ci=tuple(report["auc_ci"]),  # type: ignore[arg-type]
            threshold=report["threshold"],
        )

    report.update(froc)
    report.update(
        {
            "split": split,
            "policy": policy,
            "pixels_read_fraction": pixels_read_fraction(scored),
            "pixels_read": sum(s.scores.pixels_read for s in scored),
            "tissue_pixels": sum(s.scores.tissue_pixels for s in scored),
            "fields_scored": sum(len(s.scores.fields) for s in scored),
            "aggregate": opts.aggregate,
            "excluded": {k: v for k, v in skip.items()},
            "seconds": time.perf_counter() - started,
        }
    )
    report_path = Path(report_path)
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(strict_json(report, indent=1) + "\n", "utf-8")
    tmp.replace(report_path)
    return report


def _write_predictions(path: Path, scored: list[ScoredSlide]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["slide_id", "label", "score"])
        for s in scored:
            label = "" if s.label is None else s.label
            writer.writerow([s.slide_id, label, f"{s.scores.score:.6f}"])
    tmp.replace(path)
