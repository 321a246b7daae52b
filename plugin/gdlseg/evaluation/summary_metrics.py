"""The MLflow metrics of an evaluation: every number of ``summary.json`` that is a mean or a score, with
its bootstrap 95 % interval as ``<name>_ci95_low`` and ``<name>_ci95_high``.

Names (``<class>`` is the class name, ``<bin>`` a lesion size bin name such as ``0.1-1ml``):

- ``cases_evaluated``, ``cases_failed``; ``mean_dice`` (the mean over classes of the class means);
- ``<metric>_<class>``: the mean over cases of ``dice``, ``hd95_mm``, ``msd_mm``, ``nsd``,
  ``volume_reference_ml``, ``volume_prediction_ml``;
- per lesion class: ``lesions_reference_<class>``, ``lesions_predicted_<class>``, ``lesions_tp_<class>``,
  ``lesions_fn_<class>``, ``lesions_fp_<class>`` (counts summed over cases); ``lesion_sensitivity_<class>``,
  ``lesion_precision_<class>``, ``lesion_f1_<class>`` (pooled), ``lesion_fp_per_scan_<class>``, the means of
  the per-case scores ``lesion_sensitivity_per_case_<class>`` (and precision, f1), and per size bin
  ``lesion_sensitivity_<class>_<bin>``, ``lesion_precision_<class>_<bin>``, ``lesion_f1_<class>_<bin>``,
  ``lesion_fp_per_scan_<class>_<bin>``.

A value that is null in the summary (undefined: no case, no lesion) is not logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gdlseg.evaluation.detection import SCORES
from gdlseg.evaluation.metrics import METRICS

COUNTS = (("reference_lesions", "lesions_reference"), ("predicted_lesions", "lesions_predicted"))
COUNTS += (("tp", "lesions_tp"), ("fn", "lesions_fn"), ("fp", "lesions_fp"))


def run_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of the module docstring from the content of ``summary.json``."""
    metrics: dict[str, float] = {
        "cases_evaluated": summary["cases"]["evaluated"],
        "cases_failed": summary["cases"]["failed"],
    }
    _add(metrics, "mean_dice", {"value": summary["mean_dice"], "ci95": summary.get("mean_dice_ci95")})
    for name, entry in summary["classes"].items():
        for metric in METRICS:
            _add(metrics, f"{metric}_{name}", entry[metric])
    for name, entry in summary.get("lesions", {}).get("classes", {}).items():
        for key, metric in COUNTS:
            metrics[metric_key(f"{metric}_{name}")] = entry[key]
        for score in SCORES:
            _add(metrics, f"lesion_{score}_{name}", entry[score])
            _add(metrics, f"lesion_{score}_per_case_{name}", entry["per_case"][score])
        _add(metrics, f"lesion_fp_per_scan_{name}", entry["fp_per_scan"])
        for size_bin in entry["size_bins"]:
            for score in SCORES:
                _add(metrics, f"lesion_{score}_{name}_{size_bin['bin']}", size_bin[score])
            _add(metrics, f"lesion_fp_per_scan_{name}_{size_bin['bin']}", size_bin["fp_per_scan"])
    return metrics


def _add(metrics: dict[str, float], name: str, entry: Mapping[str, Any]) -> None:
    """``name`` = the entry's ``mean`` (a statistic) or ``value`` (a pooled score), and its ``ci95``."""
    value = entry["mean"] if "mean" in entry else entry["value"]
    if value is None:
        return
    key = metric_key(name)
    metrics[key] = value
    if entry.get("ci95") is not None:
        metrics[f"{key}_ci95_low"], metrics[f"{key}_ci95_high"] = entry["ci95"]


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)
