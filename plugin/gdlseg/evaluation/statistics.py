"""Statistics of per-case values over cases, each mean with its percentile bootstrap 95 % interval.

Policy: statistics are taken over the finite values only (NaN: undefined for that case; inf: a surface
distance with one side empty); a statistic without any finite value is None. ``std`` is the population
standard deviation (ddof = 0). Intervals: :mod:`gdlseg.evaluation.bootstrap` (2000 resamples, seed 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from gdlseg.evaluation.bootstrap import bootstrap_interval, bootstrap_sums_interval


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


def mean_of_class_means(values: Mapping[str, Mapping[str, float]]) -> tuple[float | None, list[float] | None]:
    """The mean over classes of each class's mean over cases, and its bootstrap 95 % interval.

    Args:
        values: ``{case: {class: value}}``; non-finite values are left out of their class's mean, and a
            class without a finite value out of the mean over classes.

    Returns:
        ``(mean, [low, high])``; ``(None, None)`` without any finite value. The interval resamples whole
        cases (all of a case's classes together) and recomputes both means on each resample
        (:func:`gdlseg.evaluation.bootstrap.bootstrap_sums_interval`).
    """
    classes = sorted({name for by_class in values.values() for name in by_class})
    matrix = np.array([[by_class.get(name, np.nan) for name in classes] for by_class in values.values()], dtype=float)
    matrix = matrix.reshape(len(values), len(classes))
    finite = np.isfinite(matrix)
    columns = np.concatenate([np.where(finite, matrix, 0.0), finite.astype(float)], axis=1)  # sums, then counts

    def statistic(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums[:, : len(classes)] / sums[:, len(classes) :]  # NaN for a class without a value
        present = np.isfinite(means)
        counted = present.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present, means, 0.0).sum(axis=1) / np.where(counted, counted, np.nan)

    mean = statistic(columns.sum(axis=0, keepdims=True))[0] if classes else np.nan
    if np.isnan(mean):
        return None, None
    interval = bootstrap_sums_interval(columns, statistic)
    return float(mean), None if interval is None else list(interval)
