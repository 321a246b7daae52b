"""Evaluation tables and summaries: the per-case CSV, the per-lesion CSV and ``summary.json``.

Statistics policy (:mod:`gdlseg.evaluation.statistics`): each metric's ``mean``, ``median`` and ``std``
(population, ddof = 0) are taken over the cases where it is finite, and ``cases`` counts them; ``ci95`` is
the percentile bootstrap 95 % interval of the mean over those cases (2000 resamples, seed 0:
:mod:`gdlseg.evaluation.bootstrap`). NaN (class absent from both prediction and reference) and inf (a
surface distance with one side empty) are left out; the class's ``empty_in_both`` and ``empty_in_one``
say how many cases that was. A statistic without any finite value is ``null``. The JSON therefore never
holds NaN or inf. ``mean_dice`` (the mean over classes of the class means) has its interval in
``mean_dice_ci95``; the lesion section's numbers are those of :mod:`gdlseg.evaluation.detection`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gdlseg.data.atomic import write_csv_atomically, write_json_atomically
from gdlseg.evaluation.detection import LESION_CSV_COLUMNS, MATCHING, lesion_rows, lesion_summary
from gdlseg.evaluation.lesions import LESION_COLUMNS
from gdlseg.evaluation.metrics import METRICS
from gdlseg.evaluation.options import DEFAULT_LESION_SIZE_BINS_ML, MetricOptions
from gdlseg.evaluation.statistics import mean_of_class_means, summarize

__all__ = ["CSV_COLUMNS", "DEFINITIONS", "finite_or_none", "summarize", "write_evaluation_report"]

CSV_COLUMNS = ("case", "class", "label", *METRICS, *LESION_COLUMNS)

DEFINITIONS = {
    "dice": "2|P∧R| / (|P|+|R|); NaN when the class is absent from both",
    "hd95_mm": "max of the two directed 95th percentiles of surface-to-surface distances (mm); "
    "NaN when the class is absent from both, inf when absent from one",
    "msd_mm": "mean of the surface-to-surface distances in both directions (mm), MONAI's symmetric "
    "average surface distance; NaN/inf as hd95_mm",
    "nsd": "normalised surface Dice: share of both surfaces' voxels within the class's nsd_tolerance_mm of the "
    "other surface (MONAI's compute_surface_dice); NaN when the class is absent from both, 0 when absent from one",
    "surface": "mask voxels with a face neighbour outside the mask (image border counts as outside)",
    "volume_reference_ml": "reference voxels × voxel volume / 1000",
    "volume_prediction_ml": "predicted voxels × voxel volume / 1000",
    "lesions": "connected components (face connectivity) of a lesion class; " + MATCHING,
    "lesions_tp": "reference lesions matched by a predicted component (detected); lesions_fn: the others",
    "lesions_fp": "predicted components matching no reference lesion; lesions_tp_predicted: the others",
    "lesion_sensitivity": "TP / reference lesions; NaN without a reference lesion",
    "lesion_precision": "TP_predicted / predicted components; NaN without a predicted component",
    "lesion_f1": "harmonic mean of sensitivity and precision; 0 when one is 0 or NaN and the other is not NaN",
    "size_bins": "reference lesions binned by their volume (sensitivity), predicted components by theirs "
    "(precision, false positives); bin [low_ml, high_ml)",
    "statistics": "mean, median, std (ddof=0) over the cases where the value is finite; cases = their count; "
    "ci95: percentile bootstrap 95% interval of the mean (2000 resamples of the cases, seed 0); pooled "
    "lesion scores: the score of the counts summed over cases, ci95 from resampling the cases",
}


def metric_rows(results: Mapping[str, Mapping[int, Mapping[str, Any]]], class_names: Mapping[int, str]) -> list[dict]:
    """One CSV row per case and class from ``{case: {label: {metric: value}}}``, in case then label order;
    the lesion columns are empty for a class not scored lesion by lesion."""
    rows = []
    for case, by_label in results.items():
        for label, values in sorted(by_label.items()):
            lesions = values["lesions"].row() if "lesions" in values else dict.fromkeys(LESION_COLUMNS, "")
            rows.append(
                {
                    "case": case,
                    "class": class_names[label],
                    "label": label,
                    **{m: values[m] for m in METRICS},
                    **lesions,
                }
            )
    return rows


def class_summary(rows: Sequence[Mapping], class_names: Mapping[int, str]) -> dict[str, dict]:
    """Per class: :func:`summarize` of every metric, and the counts of cases where the class is absent
    from both maps (``empty_in_both``) or from exactly one (``empty_in_one``)."""
    summary = {}
    for label, name in sorted(class_names.items()):
        mine = [row for row in rows if row["label"] == label]
        present = [(row["volume_reference_ml"] > 0) + (row["volume_prediction_ml"] > 0) for row in mine]
        summary[name] = {
            "label": label,
            **{metric: summarize(row[metric] for row in mine) for metric in METRICS},
            "empty_in_both": present.count(0),
            "empty_in_one": present.count(1),
        }
    return summary


def write_evaluation_report(
    folder: os.PathLike | str,
    results: Mapping[str, Mapping[int, Mapping[str, Any]]],
    class_names: Mapping[int, str],
    failures: Mapping[str, str] | None = None,
    unmatched: Mapping[str, Sequence[str]] | None = None,
    options: MetricOptions | None = None,
    size_bins_ml: Sequence[float] = DEFAULT_LESION_SIZE_BINS_ML,
) -> dict:
    """Write ``metrics.csv`` (one row per case and class), ``summary.json`` and, when a class was scored
    lesion by lesion, ``lesions.csv`` (one row per lesion); return the summary.

    Args:
        folder: destination folder (created).
        results: ``{case: {label: {metric: value}}}`` of the evaluated cases.
        class_names: ``{label: name}`` of the foreground classes.
        failures: ``{case: reason}`` of cases that could not be evaluated.
        unmatched: lists of case names without a partner, e.g. ``{"predictions_without_reference": […]}``.
        options: the settings the results were computed with (NSD tolerances are recorded); None: defaults.
        size_bins_ml: lesion size bin edges in ml (:func:`gdlseg.evaluation.options.size_bins`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = options or MetricOptions()
    rows = metric_rows(results, class_names)
    write_csv_atomically(folder / "metrics.csv", rows, CSV_COLUMNS)
    lesions = lesion_summary(results, class_names, size_bins_ml)
    (folder / "lesions.csv").unlink(missing_ok=True)  # of an earlier evaluation in this folder
    if lesions["classes"]:
        write_csv_atomically(
            folder / "lesions.csv", lesion_rows(results, class_names, size_bins_ml), LESION_CSV_COLUMNS
        )
    classes = class_summary(rows, class_names)
    mean_dice, mean_dice_ci95 = mean_of_class_means(
        {
            case: {class_names[label]: values["dice"] for label, values in by_label.items()}
            for case, by_label in results.items()
        }
    )
    failures = dict(failures or {})
    summary = {
        "cases": {"evaluated": len(results), "failed": len(failures)},
        "classes": classes,
        "mean_dice": mean_dice,
        "mean_dice_ci95": mean_dice_ci95,
        "nsd_tolerance_mm": {name: options.nsd_tolerance(label) for label, name in sorted(class_names.items())},
        "lesions": lesions,
        "failed_cases": [{"case": case, "error": reason} for case, reason in failures.items()],
        "unmatched": {key: list(names) for key, names in (unmatched or {}).items()},
        "definitions": DEFINITIONS,
    }
    write_json_atomically(folder / "summary.json", finite_or_none(summary))
    return summary


def finite_or_none(value: Any) -> Any:
    """The same structure with every NaN/inf float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value
