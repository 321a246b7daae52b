"""Lesion detection over the cases of an evaluation: the ``lesions`` section of ``summary.json`` and the
per-lesion table ``lesions.csv``. Per-case matching and the score definitions: :mod:`gdlseg.evaluation.lesions`.

Per lesion class, over the ``N`` evaluated cases:

- **pooled**: the counts summed over cases (``TP``, ``FN``, ``FP``, ``TP_pred``, reference and predicted
  lesions) and the sensitivity, precision and F1 of those sums (every lesion weighs the same);
- ``fp_per_scan``: the mean over cases of each case's ``FP`` (``Σ FP / N``), with the statistics of
  :func:`gdlseg.evaluation.statistics.summarize`;
- **per_case**: the mean (median, sd) over cases of each case's sensitivity, precision and F1 (every case
  weighs the same; a case where a score is NaN is left out of it);
- **size_bins**: the pooled numbers again per lesion size bin: reference lesions binned by their own volume
  (sensitivity), predicted components by theirs (precision), F1 of the two, and the false positives per
  scan of the bin.

Intervals (``ci95``): means over cases get :func:`gdlseg.evaluation.bootstrap.bootstrap_interval`; the pooled
ratios get :func:`gdlseg.evaluation.bootstrap.bootstrap_sums_interval` on the per-case counts (cases, not
lesions, are resampled, so the lesions of one scan stay together), both 2000 resamples, seed 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from gdlseg.evaluation.bootstrap import bootstrap_sums_interval
from gdlseg.evaluation.lesions import CONNECTIVITY, LesionMatch, detection_scores
from gdlseg.evaluation.statistics import summarize

Results = Mapping[str, Mapping[int, Mapping[str, Any]]]  # {case: {label: {metric: value, "lesions": LesionMatch}}}
LESION_CSV_COLUMNS = ("case", "class", "source", "lesion", "volume_ml", "size_bin", "outcome")
SCORES = ("sensitivity", "precision", "f1")
MATCHING = "a reference lesion and a predicted component match when they share at least one voxel"


def bin_names(edges_ml: Sequence[float]) -> list[str]:
    """Names of the bins of :func:`gdlseg.evaluation.options.size_bins` edges, usable in MLflow metric names:
    ``under_0.1ml``, ``0.1-1ml``, ``1-10ml``, ``10ml_and_over`` (``all`` without edges)."""
    if not edges_ml:
        return ["all"]
    middle = [f"{low:g}-{high:g}ml" for low, high in pairwise(edges_ml)]
    return [f"under_{edges_ml[0]:g}ml", *middle, f"{edges_ml[-1]:g}ml_and_over"]


def bin_index(volumes_ml: np.ndarray, edges_ml: Sequence[float]) -> np.ndarray:
    """The bin of each volume: ``i`` where ``e_i ≤ v < e_{i+1}`` (``e_0 = 0``, ``e_{k+1} = ∞``)."""
    return np.searchsorted(np.asarray(edges_ml, dtype=float), volumes_ml, side="right")


def lesion_summary(results: Results, class_names: Mapping[int, str], edges_ml: Sequence[float]) -> dict[str, Any]:
    """The ``lesions`` section of ``summary.json`` (module docstring) for every label whose results carry
    ``lesions``, in label order."""
    names = bin_names(edges_ml)
    labels = sorted(
        {label for by_label in results.values() for label, values in by_label.items() if "lesions" in values}
    )
    classes = {}
    for label in labels:
        matches = [by_label[label]["lesions"] for by_label in results.values() if "lesions" in by_label.get(label, {})]
        counts = np.array([[m.tp, m.fn, m.tp_predicted, m.fp] for m in matches], dtype=float).reshape(-1, 4)
        per_case = detection_scores(counts)
        bins = []
        for index, name in enumerate(names):
            bin_counts = _bin_counts(matches, edges_ml, index)
            bins.append(
                {
                    "bin": name,
                    "low_ml": 0.0 if index == 0 else float(edges_ml[index - 1]),
                    "high_ml": float(edges_ml[index]) if index < len(edges_ml) else None,
                    **_pooled(bin_counts),
                    "fp_per_scan": summarize(bin_counts[:, 3]),
                }
            )
        classes[class_names[label]] = {
            "label": label,
            "cases": len(matches),
            **_pooled(counts),
            "fp_per_scan": summarize(counts[:, 3]),
            "per_case": {score: summarize(per_case[:, column]) for column, score in enumerate(SCORES)},
            "size_bins": bins,
        }
    return {
        "connectivity": CONNECTIVITY,
        "matching": MATCHING,
        "size_bins_ml": list(edges_ml),
        "size_bin_names": names,
        "classes": classes,
    }


def _bin_counts(matches: Sequence[LesionMatch], edges_ml: Sequence[float], index: int) -> np.ndarray:
    """Per case ``TP, FN, TP_pred, FP`` of the lesions in bin ``index``: reference lesions by their volume,
    predicted components by theirs."""
    rows = []
    for match in matches:
        reference = bin_index(match.reference_ml, edges_ml) == index
        predicted = bin_index(match.predicted_ml, edges_ml) == index
        detected, true_predicted = match.detected[reference], match.true_predicted[predicted]
        rows.append([detected.sum(), (~detected).sum(), true_predicted.sum(), (~true_predicted).sum()])
    return np.array(rows, dtype=float).reshape(-1, 4)


def _pooled(counts: np.ndarray) -> dict[str, Any]:
    """The lesion counts of ``(cases, 4)`` counts ``TP, FN, TP_pred, FP`` summed over cases, and each score
    of the sums with its case-bootstrap ``ci95`` (None where the score is NaN)."""
    totals = counts.sum(axis=0)
    scores = detection_scores(totals)
    tp, fn, tp_predicted, fp = (int(total) for total in totals)
    pooled: dict[str, Any] = {
        "reference_lesions": tp + fn,
        "predicted_lesions": tp_predicted + fp,
        "tp": tp,
        "fn": fn,
        "tp_predicted": tp_predicted,
        "fp": fp,
    }
    for column, score in enumerate(SCORES):
        value = float(scores[column])
        interval = bootstrap_sums_interval(counts, lambda sums, c=column: detection_scores(sums)[:, c])
        pooled[score] = {
            "value": None if np.isnan(value) else value,
            "ci95": None if np.isnan(value) or interval is None else list(interval),
        }
    return pooled


def lesion_rows(results: Results, class_names: Mapping[int, str], edges_ml: Sequence[float]) -> list[dict[str, Any]]:
    """One row per lesion of ``lesions.csv``: case, class, ``source`` (``reference`` or ``prediction``), the
    component's number (``scipy.ndimage.label``'s order), volume in ml, size bin and ``outcome``: a
    reference lesion is ``TP`` (detected) or ``FN`` (missed), a predicted component ``TP`` or ``FP``."""
    names = bin_names(edges_ml)
    rows = []
    for case, by_label in results.items():
        for label, values in sorted(by_label.items()):
            match = values.get("lesions")
            if match is None:
                continue
            sides = (
                ("reference", match.reference_ml, match.detected, "FN"),
                ("prediction", match.predicted_ml, match.true_predicted, "FP"),
            )
            for source, volumes, matched, miss in sides:
                for number, (volume, hit, size_bin) in enumerate(
                    zip(volumes, matched, bin_index(volumes, edges_ml)), start=1
                ):
                    rows.append(
                        {
                            "case": case,
                            "class": class_names[label],
                            "source": source,
                            "lesion": number,
                            "volume_ml": float(volume),
                            "size_bin": names[size_bin],
                            "outcome": "TP" if hit else miss,
                        }
                    )
    return rows
