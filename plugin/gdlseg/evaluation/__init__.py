"""Evaluation of label maps against references.

- :mod:`~gdlseg.evaluation.dice`: per-class Dice from the losses' statistics.
- :mod:`~gdlseg.evaluation.surface`: surfaces, HD95, mean surface distance and normalised surface Dice in mm.
- :mod:`~gdlseg.evaluation.lesions`: lesion-level detection of one class in one case (components matched
  by overlap); :mod:`~gdlseg.evaluation.detection`: its pooled, per-case and per-size-bin summary.
- :mod:`~gdlseg.evaluation.metrics`: every metric of one case, per class (and label-map checks);
  :mod:`~gdlseg.evaluation.options`: NSD tolerances, lesion classes and size bins, resolved from class names.
- :mod:`~gdlseg.evaluation.geometry`: do two images share one voxel grid?
- :mod:`~gdlseg.evaluation.cases`: pair predictions with references by case name.
- :mod:`~gdlseg.evaluation.report`: the CSVs and ``summary.json``; :mod:`~gdlseg.evaluation.statistics`:
  statistics over cases; :mod:`~gdlseg.evaluation.plots`: pictures.
- :mod:`~gdlseg.evaluation.bootstrap`: percentile bootstrap intervals over cases.
- :mod:`~gdlseg.evaluation.batch`: a batch of cases evaluated and tracked, as ``gdlseg evaluate`` does
  (:mod:`~gdlseg.evaluation.summary_metrics`: its MLflow metrics);
  :mod:`~gdlseg.evaluation.crossval`: a cross-validation's out-of-fold predictions and summary.
"""

from gdlseg.evaluation.dice import dice_per_class
from gdlseg.evaluation.lesions import LesionMatch, match_lesions
from gdlseg.evaluation.metrics import METRICS, class_metrics, image_metrics
from gdlseg.evaluation.options import MetricOptions, metric_options
from gdlseg.evaluation.surface import (
    hausdorff_distance,
    mean_surface_distance,
    normalized_surface_dice,
    surface_distances,
)

__all__ = [
    "METRICS",
    "LesionMatch",
    "MetricOptions",
    "class_metrics",
    "dice_per_class",
    "hausdorff_distance",
    "image_metrics",
    "match_lesions",
    "mean_surface_distance",
    "metric_options",
    "normalized_surface_dice",
    "surface_distances",
]
