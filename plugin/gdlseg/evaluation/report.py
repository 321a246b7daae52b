"""Evaluation tables and summaries: the per-case CSV and the per-class statistics of ``summary.json``.

Statistics policy: each metric's ``mean``, ``median`` and ``std`` (population, ddof = 0) are taken over
the cases where it is finite, and ``cases`` counts them; ``ci95`` is the percentile bootstrap 95 %
interval of the mean over those cases (2000 resamples, seed 0: :mod:`gdlseg.evaluation.bootstrap`).
NaN (class absent from both prediction and reference) and inf (a surface distance with one side empty)
are left out; the class's
``empty_in_both`` and ``empty_in_one`` say how many cases that was. A statistic without any finite
value is ``null``. The JSON therefore never holds NaN or inf.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdlseg.data.atomic import write_csv_atomically, write_json_atomically
from gdlseg.evaluation.bootstrap import bootstrap_interval
from gdlseg.evaluation.metrics import METRICS

CSV_COLUMNS = ("case", "class", "label", *METRICS)

DEFINITIONS = {
    "dice": "2|P∧R| / (|P|+|R|); NaN when the class is absent from both",
    "hd95_mm": "max of the two directed 95th percentiles of surface-to-surface distances (mm); "
    "NaN when the class is absent from both, inf when absent from one",
    "msd_mm": "mean of the surface-to-surface distances in both directions (mm), MONAI's symmetric "
    "average surface distance; NaN/inf as hd95_mm",
    "surface": "mask voxels with a face neighbour outside the mask (image border counts as outside)",
    "volume_reference_ml": "reference voxels × voxel volume / 1000",
    "volume_prediction_ml": "predicted voxels × voxel volume / 1000",
    "statistics": "mean, median, std (ddof=0) over the cases where the value is finite; cases = their count; "
    "ci95: percentile bootstrap 95% interval of the mean (2000 resamples of the cases, seed 0)",
}


def summarize(values: Iterable[float]) -> dict[str, float | int | list[float] | None]:
    """``{"mean", "median", "std", "ci95", "cases"}`` of the finite ``values`` (None when there are none);
    ``ci95`` is ``[low, high]`` (:func:`gdlseg.evaluation.bootstrap.bootstrap_interval`)."""
    array = np.asarray([float(value) for value in values], dtype=float)
    finite = array[np.isfinite(array)]
    if not finite.size:
        return {"mean": None, "median": None, "std": None, "ci95": None, "cases": 0}
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "std": float(finite.std()),
        "ci95": list(bootstrap_interval(finite)),
        "cases": int(finite.size),
    }


def metric_rows(results: Mapping[str, Mapping[int, Mapping[str, float]]], class_names: Mapping[int, str]) -> list[dict]:
    """One CSV row per case and class from ``{case: {label: {metric: value}}}``, in case then label order."""
    rows = []
    for case, by_label in results.items():
        for label, values in sorted(by_label.items()):
            rows.append({"case": case, "class": class_names[label], "label": label, **{m: values[m] for m in METRICS}})
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


def mean_of_class_means(summary: Mapping[str, Mapping], metric: str = "dice") -> float | None:
    """The mean over classes of each class's mean ``metric`` (classes never scored are left out)."""
    means = [entry[metric]["mean"] for entry in summary.values() if entry[metric]["mean"] is not None]
    return float(np.mean(means)) if means else None


def write_evaluation_report(
    folder: os.PathLike | str,
    results: Mapping[str, Mapping[int, Mapping[str, float]]],
    class_names: Mapping[int, str],
    failures: Mapping[str, str] | None = None,
    unmatched: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Write ``metrics.csv`` (one row per case and class) and ``summary.json``; return the summary.

    Args:
        folder: destination folder (created).
        results: ``{case: {label: {metric: value}}}`` of the evaluated cases.
        class_names: ``{label: name}`` of the foreground classes.
        failures: ``{case: reason}`` of cases that could not be evaluated.
        unmatched: lists of case names without a partner, e.g. ``{"predictions_without_reference": […]}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = metric_rows(results, class_names)
    write_csv_atomically(folder / "metrics.csv", rows, CSV_COLUMNS)
    classes = class_summary(rows, class_names)
    failures = dict(failures or {})
    summary = {
        "cases": {"evaluated": len(results), "failed": len(failures)},
        "classes": classes,
        "mean_dice": mean_of_class_means(classes),
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
