"""The statistics behind every verdict, on per-seed values paired by seed.

Every variant of an experiment is trained with the same seeds (initialisation seed, data order,
augmentation), so seed s of variant A and seed s of variant B form a pair, and a comparison is a
test on the per-seed differences: mean difference, 95% confidence interval, two-sided paired
t-test. Across the comparisons of one experiment the p-values are Holm-adjusted; an omnibus
repeated-measures ANOVA asks whether the variants differ at all, and a trend test (the per-seed
least-squares slope against an ordered factor, t-tested across seeds) asks whether the metric
moves with that factor. ``detectable`` is post-hoc power: the true difference this design (its
seeds, its observed spread, its test level) had 80% power to detect. It describes the design,
not the effect: it is not a bound on the effect and rules no effect out (the confidence interval
is what bounds the effect); a smaller true effect may well have been missed.

scipy is imported inside the functions: the CLI imports this package, and importing scipy
measurably delays its start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
POWER = 0.8


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-based confidence interval of the mean: (mean, low, high). One value: a
    zero-width interval (nothing is known about the spread)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    from scipy import stats as sps

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Paired:
    """a - b over n paired seeds."""

    diff: float          # mean of the per-seed differences
    low: float           # 95% confidence interval of the mean difference
    high: float
    p: float             # two-sided paired t-test (nan below 2 pairs)
    sd: float            # sample standard deviation of the differences
    n: int


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired t-test of a - b (a[i] and b[i] from the same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    n = len(differences)
    mean, low, high = mean_ci(differences)
    if n < 2:
        return Paired(mean, low, high, float("nan"), 0.0, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in differences) / (n - 1))
    if sd == 0:  # identical differences: the t statistic is undefined
        return Paired(mean, mean, mean, 1.0 if mean == 0 else 0.0, 0.0, n)
    from scipy import stats as sps

    t_statistic = mean / (sd / math.sqrt(n))
    return Paired(mean, low, high, float(2 * sps.t.sf(abs(t_statistic), n - 1)), sd, n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; nan stays nan and is not
    counted). Adjusted p < alpha <=> rejected by Holm's procedure at family-wise level alpha."""
    counted = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(counted, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(counted) - rank) * pvalues[i]))
        out[i] = running
    return out


def detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test at ``alpha`` finds with ``power``, for
    n pairs whose differences have standard deviation ``sd`` (noncentral t): the effect the
    design had that power to detect, not a bound on the effect. inf below 2 pairs."""
    if n < 2:
        return math.inf
    if sd == 0:
        return 0.0
    from scipy import optimize
    from scipy import stats as sps

    df = n - 1
    crit = float(sps.t.ppf(1 - alpha / 2, df))

    def shortfall(d: float) -> float:  # d: the effect in units of sd (scale-free)
        nc = d * math.sqrt(n)
        wrong_side = float(sps.nct.sf(crit, df, -nc))  # = cdf(-crit, nc); scipy's cdf can give
        if math.isnan(wrong_side):                   # nan far in this tail, where it is ~0
            wrong_side = 0.0
        return float(sps.nct.sf(crit, df, nc)) + wrong_side - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return sd * float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12))


def equivalence(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """Paired TOST: the p-value for "|mean(a - b)| < margin" (both one-sided tests must reject;
    p < alpha <=> the 1 - 2 alpha confidence interval lies inside (-margin, margin))."""
    result = paired(a, b)
    if result.n < 2:
        return float("nan")
    if result.sd == 0:
        return 0.0 if abs(result.diff) < margin else 1.0
    from scipy import stats as sps

    se = result.sd / math.sqrt(result.n)
    lower = float(sps.t.sf((result.diff + margin) / se, result.n - 1))   # H0: diff <= -margin
    upper = float(sps.t.cdf((result.diff - margin) / se, result.n - 1))  # H0: diff >= +margin
    return max(lower, upper)


def omnibus(table: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Repeated-measures one-way ANOVA: table[seed][variant]. Returns (F, p) for "every variant
    has the same mean", seeds as blocks (the pairing removes seed-to-seed differences)."""
    n, k = len(table), len(table[0])
    if n < 2 or k < 2:
        return float("nan"), float("nan")
    grand = sum(map(sum, table)) / (n * k)
    variant_means = [sum(row[j] for row in table) / n for j in range(k)]
    seed_means = [sum(row) / k for row in table]
    ss_var = n * sum((mean - grand) ** 2 for mean in variant_means)
    ss_err = sum((table[i][j] - variant_means[j] - seed_means[i] + grand) ** 2
                 for i in range(n) for j in range(k))
    df1, df2 = k - 1, (k - 1) * (n - 1)
    if ss_err == 0:
        return (math.inf, 0.0) if ss_var > 0 else (float("nan"), 1.0)
    from scipy import stats as sps

    f_statistic = (ss_var / df1) / (ss_err / df2)
    return f_statistic, float(sps.f.sf(f_statistic, df1, df2))


def slopes(table: Sequence[Sequence[float]], levels: Sequence[float]) -> list[float]:
    """Each seed's least-squares slope of its values (table[seed][level]) against ``levels``."""
    mx = sum(levels) / len(levels)
    sxx = sum((x - mx) ** 2 for x in levels)
    return [sum((x - mx) * y for x, y in zip(levels, row, strict=True)) / sxx for row in table]


def trend(table: Sequence[Sequence[float]], levels: Sequence[float]) -> Paired:
    """Does the value move with an ordered factor? The per-seed slopes against ``levels``,
    t-tested against 0 across seeds (a Paired of the slopes; diff = mean slope per level unit)."""
    per_seed_slopes = slopes(table, levels)
    return paired(per_seed_slopes, [0.0] * len(per_seed_slopes))
