"""Percentile bootstrap confidence intervals over cases: of a mean, and of any statistic of per-case sums
(a pooled ratio such as the lesion sensitivity ``Σ TP / Σ (TP + FN)``, or a mean of per-class means)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
_BLOCK = 250  # resamples drawn at once: bounds the memory to 250 × cases × columns values


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
    array = np.asarray(values, dtype=float).ravel()
    _check(confidence, resamples)
    if array.size and np.all(array == array[0]):  # the mean of any resample is exact; summing in floats would not be
        return float(array[0]), float(array[0])
    return bootstrap_sums_interval(array[:, None], lambda sums: sums[:, 0] / array.size, confidence, resamples, seed)


def bootstrap_sums_interval(
    columns: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a statistic of column sums over resampled cases.

    ``columns`` is ``(n cases, k)``: per case ``k`` numbers (e.g. its TP and FN lesion counts). Each of the
    ``B = resamples`` resamples draws ``n`` rows with replacement (the same generator and draws as
    :func:`bootstrap_interval`), sums them per column, and ``statistic`` maps those ``(B', k)`` sums to
    ``(B',)`` values (e.g. ``TP / (TP + FN)``). Resampling whole cases keeps the lesions of one scan
    together (a cluster bootstrap). Resamples whose statistic is NaN (a zero denominator: no lesion drawn)
    are left out; the interval is the ``α/2`` and ``1 - α/2`` quantiles of the others, None if none is
    left or there is no case.

    Raises:
        ValueError: ``columns`` not 2-D, ``confidence`` not in (0, 1), or ``resamples`` below 1.
    """
    _check(confidence, resamples)
    columns = np.asarray(columns, dtype=float)
    if columns.ndim != 2:
        raise ValueError(f"columns must be (cases, k), got shape {columns.shape}.")
    cases = columns.shape[0]
    if cases == 0:
        return None
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            statistic(columns[rng.integers(0, cases, size=(min(_BLOCK, resamples - first), cases))].sum(axis=1))
            for first in range(0, resamples, _BLOCK)
        ]
    )
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}.")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}.")
