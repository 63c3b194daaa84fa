"""Welch's test behind every verdict of the generated pages, against scipy's own implementation."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from simvq.experiments.stats import contrast, holm, verdict, welch


@pytest.mark.parametrize("a, b", [([24.1, 24.3, 24.2], [23.0, 23.1, 22.9]), ([1.0, 2.0], [1.5, 1.7, 1.2, 1.9]),
                                  ([0.5, 0.51, 0.49, 0.5], [0.52, 0.48])])
def test_welch_equals_scipy_and_its_interval_holds_the_difference(a, b):
    test = welch(a, b)
    assert test.p == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-10)
    interval = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (test.low, test.high) == pytest.approx((interval.low, interval.high), rel=1e-10)
    assert test.low < test.difference < test.high and (test.n_a, test.n_b) == (len(a), len(b))


def test_one_seed_gets_no_test_and_no_spread_is_decided_by_the_means():
    assert welch([1.0], [1.0, 2.0]) is None
    assert verdict([1.0], [0.5, 0.7]) == "+0.40 (one run on a side: no test)"
    assert welch([1.0, 1.0], [0.5, 0.5]).p == 0.0 and welch([1.0, 1.0], [1.0, 1.0]).p == 1.0


def test_verdict_names_the_better_side_by_direction():
    low_is_good = verdict([10.0, 10.2, 10.1], [20.0, 20.3, 20.1], lower=True, digits=1)
    assert low_is_good.startswith("simvq better: -10.0 (95% CI [") and "Welch, 3 vs 3 seeds" in low_is_good
    assert verdict([10.0, 10.2, 10.1], [20.0, 20.3, 20.1], lower=False, digits=1).startswith("the rival better")
    assert verdict([1.0, 1.2], [1.1, 1.0]).startswith("no significant difference (+0.05; ")
    assert math.isfinite(welch([1.0, 1.2], [1.1, 1.0]).p)


def test_holm_matches_the_closed_testing_definition():
    """Holm's adjusted p of hypothesis i is the largest Bonferroni p over every subset holding i
    (closed testing), computed here by brute force; R's p.adjust(method = "holm") gives the first case."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    for pvalues in ([0.2, 0.001, 0.04, 0.04, 0.5], [0.9, 0.8], [0.3, 0.01, 0.02, 0.011, 0.6, 0.049]):
        m = len(pvalues)
        closed = [max(min(1.0, len(s) * min(pvalues[j] for j in s))
                      for r in range(1, m + 1) for s in itertools.combinations(range(m), r) if i in s) for i in range(m)]
        assert holm(pvalues) == pytest.approx(closed)
    assert holm([]) == []


def test_a_difference_of_differences_reduces_to_welch_when_the_other_side_is_exact():
    """Two of the four groups without spread add nothing to the error: the contrast is then Welch's
    test of the other two, one shifted by the constant groups' difference."""
    a1, a2, b1, b2 = [5.0, 5.4, 4.9], [3.1, 3.6], [2.0, 2.0, 2.0], [1.0, 1.0]
    did = contrast([a1, b1, a2, b2], [1, -1, -1, 1])
    reference = scipy_stats.ttest_ind(a1, [x + 1.0 for x in a2], equal_var=False)  # (a1 - 2) - (a2 - 1)
    assert did.difference == pytest.approx(np.mean(a1) - 2.0 - np.mean(a2) + 1.0)
    assert did.p == pytest.approx(reference.pvalue, rel=1e-10)
    assert (did.low, did.high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-10)
    assert did.sizes == (3, 3, 2, 2)
    assert contrast([a1, [1.0], a2, b2], [1, -1, -1, 1]) is None  # a group of one: no test
    with pytest.raises(ValueError, match="weights"):
        contrast([a1, a2], [1, -1, 1])


def test_the_difference_of_differences_holds_its_level_under_the_null():
    """Equal gaps, unequal spreads and two or three seeds a group, as the campaigns have: the test
    rejects about 5% of the time (Satterthwaite's approximation is slightly conservative here)."""
    rng = np.random.default_rng(0)
    spreads, sizes = (1.0, 3.0, 0.5, 2.0), (2, 3, 2, 3)
    draws = 4000
    rejected = sum(contrast([rng.normal(0.0, s, n) for s, n in zip(spreads, sizes)], [1, -1, -1, 1]).significant
                   for _ in range(draws))
    assert 0.02 < rejected / draws < 0.07
    shifted = sum(contrast([rng.normal(m, s, n) for m, s, n in zip((6.0, 0.0, 0.0, 0.0), spreads, sizes)], [1, -1, -1, 1]).significant
                  for _ in range(400))
    assert shifted / 400 > 0.3  # a real change of the gap is found often even at these seed counts


def test_mean_interval_is_the_t_interval_of_the_seeds_mean():
    from simvq.experiments.stats import mean_interval

    low, high = mean_interval([0.98, 0.99, 1.0])  # mean 0.99, sd 0.01, n 3: half-width t(0.975, 2) = 4.302653 x 0.01 / sqrt(3)
    assert (low, high) == pytest.approx((0.99 - 0.0248414, 0.99 + 0.0248414), abs=1e-6)
    assert mean_interval([0.5, 0.5]) == (0.5, 0.5) and mean_interval([0.5]) is None
