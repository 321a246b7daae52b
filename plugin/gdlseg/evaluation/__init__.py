"""Evaluation of label maps against references.

- :mod:`~gdlseg.evaluation.dice`: per-class Dice from the losses' statistics.
- :mod:`~gdlseg.evaluation.surface`: surfaces, HD95 and mean surface distance in mm.
- :mod:`~gdlseg.evaluation.metrics`: every metric of one case, per class (and label-map checks).
- :mod:`~gdlseg.evaluation.geometry`: do two images share one voxel grid?
- :mod:`~gdlseg.evaluation.cases`: pair predictions with references by case name.
- :mod:`~gdlseg.evaluation.report`: the CSV and the summary statistics; :mod:`~gdlseg.evaluation.plots`: pictures.
- :mod:`~gdlseg.evaluation.bootstrap`: the percentile bootstrap interval of a mean over cases.
- :mod:`~gdlseg.evaluation.batch`: a batch of cases evaluated and tracked, as ``gdlseg evaluate`` does;
  :mod:`~gdlseg.evaluation.crossval`: a cross-validation's out-of-fold predictions and summary.
"""

from gdlseg.evaluation.dice import dice_per_class
from gdlseg.evaluation.metrics import METRICS, class_metrics, image_metrics
from gdlseg.evaluation.surface import hausdorff_distance, mean_surface_distance, surface_distances

__all__ = [
    "METRICS",
    "class_metrics",
    "dice_per_class",
    "hausdorff_distance",
    "image_metrics",
    "mean_surface_distance",
    "surface_distances",
]
