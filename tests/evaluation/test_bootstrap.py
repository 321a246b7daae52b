"""Percentile bootstrap intervals (of a mean, of statistics of per-case sums), on cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdlseg.evaluation.bootstrap import bootstrap_interval, bootstrap_sums_interval
from gdlseg.evaluation.statistics import mean_of_class_means


def test_equal_values_and_a_single_value_give_a_zero_width_interval():
    assert bootstrap_interval([0.8] * 7) == (0.8, 0.8)
    assert bootstrap_interval([0.3]) == (0.3, 0.3)
    assert bootstrap_interval([]) is None


def test_two_values_give_the_quantiles_of_the_binomial_resample_means():
    # With values 0 and 1 a resample's mean is K/n, K ~ Binomial(n, 1/2): for n = 2 the means are 0, 1/2
    # and 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % quantiles are 0 and 1.
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # For n = 20 the quantiles of K are 6 and 14 (P(K <= 5) = 0.021, P(K <= 14) = 0.979): [0.3, 0.7].
    low, high = bootstrap_interval([0.0, 1.0] * 10, resamples=20000)
    assert low == pytest.approx(0.3, abs=0.026) and high == pytest.approx(0.7, abs=0.026)


def test_the_interval_is_reproducible_contains_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(5)
    few, many = rng.normal(0.7, 0.1, 10), rng.normal(0.7, 0.1, 400)
    assert bootstrap_interval(few) == bootstrap_interval(few)
    for values in (few, many):
        low, high = bootstrap_interval(values)
        assert low < values.mean() < high
    # the width approaches 2 × 1.96 × sd / sqrt(n) (the normal approximation) for many cases
    low, high = bootstrap_interval(many)
    assert high - low == pytest.approx(2 * 1.96 * many.std() / np.sqrt(many.size), rel=0.1)
    assert high - low < np.subtract(*bootstrap_interval(few)[::-1])


@pytest.mark.parametrize(
    ("arguments", "message"), [({"confidence": 1.0}, "confidence"), ({"resamples": 0}, "resamples")]
)
def test_bad_settings_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval([1.0, 2.0], **arguments)


def test_the_sums_interval_of_a_mean_is_the_mean_interval():
    values = np.random.default_rng(2).normal(0.6, 0.2, 30)
    interval = bootstrap_sums_interval(values[:, None], lambda sums: sums[:, 0] / values.size)
    assert interval == pytest.approx(bootstrap_interval(values), abs=1e-12)  # the same draws
    assert bootstrap_sums_interval(np.zeros((0, 2)), lambda sums: sums[:, 0]) is None
    with pytest.raises(ValueError, match=r"columns must be \(cases, k\)"):
        bootstrap_sums_interval(values, lambda sums: sums)


def test_a_pooled_ratio_resamples_cases_and_leaves_out_undefined_resamples():
    # Case a: 1 of 2 lesions found; case b: no lesion. Resamples {a, a} and {a, b} give 1/2, {b, b} gives 0/0
    # (left out): the interval is [0.5, 0.5].
    counts = np.array([[1.0, 2.0], [0.0, 0.0]])
    with np.errstate(invalid="ignore"):
        interval = bootstrap_sums_interval(counts, lambda sums: sums[:, 0] / sums[:, 1])
    assert interval == (0.5, 0.5)
    with np.errstate(invalid="ignore"):
        assert bootstrap_sums_interval(counts[1:], lambda sums: sums[:, 0] / sums[:, 1]) is None


def test_the_mean_over_classes_of_the_class_means():
    # a: {x: 1, y: 0}, b: {x: 0, y: undefined}: class means 0.5 and 0, mean 0.25. Resamples {a, a} → 0.5,
    # {a, b} → mean(0.5, 0) = 0.25, {b, b} → 0 (y has no value there and is left out).
    mean, interval = mean_of_class_means({"a": {"x": 1.0, "y": 0.0}, "b": {"x": 0.0, "y": math.nan}})
    assert mean == 0.25 and interval == [0.0, 0.5]
    assert mean_of_class_means({"a": {"x": math.nan}}) == (None, None)
    assert mean_of_class_means({}) == (None, None)
