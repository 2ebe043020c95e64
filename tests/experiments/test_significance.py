"""Each statistic against scipy or a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from xception.experiments.significance import (
    detectable,
    equivalence,
    holm,
    mean_ci,
    omnibus,
    paired,
    slopes,
    trend,
)

A = [0.912, 0.905, 0.921, 0.899, 0.915]
B = [0.903, 0.901, 0.910, 0.897, 0.904]


def test_mean_ci_is_the_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 4.0])
    # hand: mean 7/3, sd sqrt(7/3), t(0.975, 2) = 4.302653
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-6)
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)


def test_paired_matches_scipy():
    r = paired(A, B)
    ref = sps.ttest_rel(A, B)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert r.diff == pytest.approx(np.mean(np.subtract(A, B)))
    ci = ref.confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert r.n == 5 and r.sd == pytest.approx(np.std(np.subtract(A, B), ddof=1))
    with pytest.raises(ValueError, match="equal lengths"):
        paired(A, B[:4])


def test_pairing_removes_the_seed_effect():
    # a large shared seed effect, a constant-ish 1-point gain: Welch sees nothing, pairing does
    seed = [0.80, 0.90, 0.85, 0.95, 0.88]
    a = [s + 0.01 + e for s, e in zip(seed, [0.001, -0.002, 0.0, 0.002, -0.001], strict=True)]
    assert paired(a, seed).p < 0.001
    assert sps.ttest_ind(a, seed, equal_var=False).pvalue > 0.5


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 with the running max: 0.04, 0.06, 0.08, 0.30
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([float("nan"), 0.02, 0.03])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.04, 0.04])


def test_detectable_has_the_stated_power():
    sd, n = 0.8, 5
    effect = detectable(sd, n)
    df, crit = n - 1, sps.t.ppf(0.975, n - 1)
    nc = effect * math.sqrt(n) / sd
    power = sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=1e-6)
    # a simulation agrees: designs with this noise find that effect at the stated power
    rng = np.random.default_rng(0)
    hits = np.mean([sps.ttest_rel(effect + rng.normal(0, sd, n), np.zeros(n)).pvalue < 0.05
                    for _ in range(4000)])
    assert hits == pytest.approx(0.8, abs=0.025)
    assert detectable(sd, 20) < effect / 2  # more seeds, smaller detectable effects
    assert detectable(sd, 1) == math.inf


def test_equivalence_is_two_one_sided_tests():
    a = [1.00, 1.02, 0.99, 1.01, 1.00, 0.98]
    b = [1.00, 1.01, 1.00, 1.00, 1.01, 0.99]
    d = np.subtract(a, b)
    se = d.std(ddof=1) / math.sqrt(len(d))
    low = sps.t.sf((d.mean() + 0.05) / se, len(d) - 1)
    high = sps.t.cdf((d.mean() - 0.05) / se, len(d) - 1)
    assert equivalence(a, b, 0.05) == pytest.approx(max(low, high))
    assert equivalence(a, b, 0.05) < 0.01          # tight differences: equivalent at 0.05
    assert equivalence(a, b, 0.001) > 0.4          # not at a margin below the noise
    # the same as "the 90% interval lies inside the margin"
    ci90 = sps.ttest_rel(a, b).confidence_interval(0.90)
    assert (ci90.low > -0.05 and ci90.high < 0.05) == (equivalence(a, b, 0.05) < 0.05)


def test_omnibus_is_the_repeated_measures_anova():
    table = [[0.90, 0.88, 0.86], [0.93, 0.90, 0.89], [0.89, 0.89, 0.85], [0.91, 0.87, 0.88]]
    f, p = omnibus(table)
    # by hand: SS between variants, SS error after removing seed and variant means
    x = np.array(table)
    g = x.mean()
    ss_var = 4 * ((x.mean(0) - g) ** 2).sum()
    ss_err = ((x - x.mean(0) - x.mean(1, keepdims=True) + g) ** 2).sum()
    f_ref = (ss_var / 2) / (ss_err / 6)
    assert f == pytest.approx(f_ref) and p == pytest.approx(sps.f.sf(f_ref, 2, 6))
    # with two variants it is the paired t-test (F = t^2)
    two = [row[:2] for row in table]
    t = sps.ttest_rel([r[0] for r in two], [r[1] for r in two])
    assert omnibus(two)[0] == pytest.approx(t.statistic ** 2)
    assert omnibus(two)[1] == pytest.approx(t.pvalue)


def test_trend_is_the_t_test_of_per_seed_slopes():
    levels = [0, 1, 2, 3]
    table = [[0.1, 0.3, 0.4, 0.7], [0.2, 0.2, 0.5, 0.6], [0.0, 0.3, 0.3, 0.5]]
    s = slopes(table, levels)
    assert s == pytest.approx([sps.linregress(levels, row).slope for row in table])
    r = trend(table, levels)
    assert r.diff == pytest.approx(np.mean(s))
    assert r.p == pytest.approx(sps.ttest_1samp(s, 0.0).pvalue)
    assert trend([[1, 1, 1, 1]] * 3, levels).p == 1.0  # flat: no trend
