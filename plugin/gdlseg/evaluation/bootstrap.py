"""Percentile bootstrap confidence interval of a mean over cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
_BLOCK = 250  # resamples drawn at once: bounds the memory to 250 × cases indices


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani, 1993, ch. 13).

    Draw ``B = resamples`` samples of ``n = len(values)`` values with replacement, indices uniform
    (numpy's ``default_rng(seed)``), and take each sample's mean ``m_b``; the interval is the
    ``α/2`` and ``1 - α/2`` quantiles of ``m_1 … m_B`` (``α = 1 - confidence``, numpy's linear
    interpolation between order statistics). It describes how much the mean would move with another
    sample of cases from the same population; it is not a per-case range.

    Edge cases: one value, or all values equal, give a zero-width interval at that value; no value gives
    None. A fixed ``seed`` makes the interval reproducible; with few cases (below about 10) it is too
    narrow, as every bootstrap interval is. Non-finite values are the caller's to leave out.

    Raises:
        ValueError: ``confidence`` not in (0, 1), or ``resamples`` below 1.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}.")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}.")
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        return None
    if np.all(array == array[0]):  # the mean of any resample is exact; summing in floats would not be
        return float(array[0]), float(array[0])
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            array[rng.integers(0, array.size, size=(min(_BLOCK, resamples - first), array.size))].mean(axis=1)
            for first in range(0, resamples, _BLOCK)
        ]
    )
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
