"""The tests behind every "better / worse / no difference" in the generated pages: Welch's t-test
over seeds (unequal variances), with the 95% confidence interval of the difference of means
(Welch-Satterthwaite degrees of freedom), from scipy.stats; and its generalisation to a linear
contrast of several groups' means (``contrast``: e.g. whether a gap between two methods changes
between two settings). A side with one seed has no spread, so no test: the text says "one run" and
gives no verdict."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05  # two-sided significance level of every verdict


@dataclass(frozen=True)
class Welch:
    difference: float  # mean(a) - mean(b)
    low: float  # 95% confidence interval of the difference
    high: float
    p: float  # two-sided p-value
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def welch(a, b) -> Welch | None:
    """Welch's t-test of mean(a) against mean(b); None when a side has fewer than two values. Both
    sides without spread (e.g. 100% usage on every seed): p = 1 for equal means, else 0."""
    test = contrast([a, b], [1.0, -1.0])
    return None if test is None else Welch(test.difference, test.low, test.high, test.p, *test.sizes)


@dataclass(frozen=True)
class Contrast:
    difference: float  # sum of weight x group mean
    low: float  # 95% confidence interval of it
    high: float
    p: float  # two-sided p-value against 0
    sizes: tuple[int, ...]  # seeds per group

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def contrast(groups, weights) -> Contrast | None:
    """A t-test of a linear contrast of group means, sum(w_i mean_i) = 0, with unequal variances: the
    standard error from each group's own variance and the Welch-Satterthwaite degrees of freedom.
    Two groups with weights (1, -1) are Welch's t-test; four with (1, -1, -1, 1) test whether a gap
    between two methods differs between two settings (a difference of differences). None when a
    group has fewer than two values. Every group without spread: p = 1 for a zero contrast, else 0."""
    from scipy import stats

    groups = [[float(v) for v in g] for g in groups]
    if len(groups) != len(weights):
        raise ValueError(f"weights: one per group ({len(groups)}), got {len(weights)}")
    if any(len(g) < 2 for g in groups):
        return None
    difference = sum(w * statistics.fmean(g) for w, g in zip(weights, groups))
    parts = [w * w * statistics.variance(g) / len(g) for w, g in zip(weights, groups)]
    sizes = tuple(len(g) for g in groups)
    if sum(parts) == 0:
        return Contrast(difference, difference, difference, 1.0 if difference == 0 else 0.0, sizes)
    dof = sum(parts) ** 2 / sum(v * v / (len(g) - 1) for v, g in zip(parts, groups))  # Welch-Satterthwaite
    error = math.sqrt(sum(parts))
    p = 2 * stats.t.sf(abs(difference) / error, dof)  # two groups: = ttest_ind(a, b, equal_var=False).pvalue
    half = stats.t.ppf(1 - ALPHA / 2, dof) * error
    return Contrast(difference, float(difference - half), float(difference + half), float(p), sizes)


def mean_interval(values) -> tuple[float, float] | None:
    """The 95% t-interval of the mean of ``values`` (seeds); None for fewer than two. No spread: the
    mean itself at both ends."""
    from scipy import stats

    values = [float(v) for v in values]
    if len(values) < 2:
        return None
    mean, error = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = float(stats.t.ppf(1 - ALPHA / 2, len(values) - 1)) * error
    return mean - half, mean + half


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error rate at the level the
    adjusted values are read against), in the input order: the i-th smallest of m is multiplied by
    m - i, and the adjusted values are made non-decreasing in that order, capped at 1."""
    pvalues = [float(p) for p in pvalues]
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(sorted(range(m), key=pvalues.__getitem__)):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def holm_family(mine, rivals: dict) -> dict[str, tuple[Welch, float]]:
    """Welch's test of ``mine`` (seed values) against each rival's, and Holm's adjustment over the
    family of those with a test (a side with one seed has none): ``{rival: (test, adjusted p)}``."""
    tests = {name: test for name, values in rivals.items() if (test := welch(mine, values)) is not None}
    return {name: (test, p) for (name, test), p in zip(tests.items(), holm([t.p for t in tests.values()]))}


def signed(x: float, digits: int) -> str:
    """A difference with its sign, and none where it rounds to zero (a "-0.00" would claim a side)."""
    return f"{x:+.{digits}f}" if round(x, digits) != 0 else f"{0:.{digits}f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def welch_text(test: Welch, *, scale: float = 1.0, digits: int = 2, adjusted: float | None = None) -> str:
    """A Welch test in words: its 95% CI of the difference, its p (and the family-adjusted one when
    given) and the seeds on each side."""
    holm_text = "" if adjusted is None else f", Holm {p_text(adjusted)}"
    return (f"95% CI [{test.low * scale:+.{digits}f}, {test.high * scale:+.{digits}f}], {p_text(test.p)}{holm_text}, Welch, "
            f"{test.n_a} vs {test.n_b} seeds")


def verdict(a, b, *, scale: float = 1.0, digits: int = 2, lower: bool = False, names: tuple[str, str] = ("simvq", "the rival"),
            adjusted: float | None = None) -> str:
    """``a`` against ``b`` (seed values) in words: which is better at level ALPHA, the difference
    with its 95% CI and the p-value; "one run" without a test where a side has a single seed. With
    ``adjusted`` (the p-value corrected for its family of tests, e.g. Holm's), the verdict reads it."""
    test = welch(a, b)
    diff = (statistics.fmean(a) - statistics.fmean(b)) * scale if a and b else math.nan
    shown = signed(diff, digits)
    if test is None:
        return f"{shown} (one run on a side: no test)"
    ci = welch_text(test, scale=scale, digits=digits, adjusted=adjusted)
    if (test.p if adjusted is None else adjusted) >= ALPHA:
        return f"no significant difference ({shown}; {ci})"
    better = (diff < 0) if lower else (diff > 0)
    return f"{names[0] if better else names[1]} better: {diff:+.{digits}f} ({ci})"


__all__ = ["ALPHA", "Contrast", "Welch", "contrast", "holm", "holm_family", "mean_interval", "p_text", "signed", "verdict", "welch", "welch_text"]
