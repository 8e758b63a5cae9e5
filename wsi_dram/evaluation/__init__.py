"""Evaluation: classification figures, slide metrics, FROC, plots, cohort.

Modules: :mod:`classification` (classification figures for the trainer),
:mod:`slide_metrics` (ROC AUC, bootstrap interval, thresholds, the
``report.json`` keys), :mod:`froc` (the Camelyon16 organisers' lesion-level
FROC protocol, ported), :mod:`lesions` (lesion candidates from a heatmap and
the detection CSV), :mod:`plots` (ROC and FROC PNGs), :mod:`reference`
(Camelyon16 manifest, the organisers' reference file, exclusions).
"""
