"""Each declared test of an experiment, computed on its runs, and the verdict it supports.

**The verdict rule** (the one statement of it; every report's method text says the same). A
verdict is read off the 95% confidence interval of the test's effect (the mean per-seed
difference, or the mean per-seed slope of a trend), and counts only where it also survives
Holm's correction within its family (primary tests; secondary tests) at α = 0.05:

- a "greater" claim (the effect is > 0): **supports** when the whole 95% CI lies above 0 and the
  Holm-adjusted paired p < α; **contradicts** when the whole 95% CI lies below 0 and the
  Holm-adjusted p < α; otherwise **inconclusive**.
- an "equal" claim (|effect| < the experiment's margin m): **supports** when the whole 95% CI
  lies inside (−m, +m) and the Holm-adjusted equivalence test (paired TOST at ±m) has p < α;
  **contradicts** when the whole 95% CI lies outside the margin on one side (low ≥ +m or
  high ≤ −m) and the Holm-adjusted paired p < α; otherwise **inconclusive** (a point estimate
  beyond the margin with a CI that reaches into it decides nothing).

The CI is the unadjusted t-interval the report prints; Holm is the multiplicity gate on top of
it, so within a family a verdict word is never looser than its Holm-adjusted test.

An inconclusive verdict carries the effect this design had 80% power to detect (post-hoc power:
a two-sided paired t-test at α / family size, the strictest level Holm can use, with the
observed spread of the per-seed effects). It describes the design, not the effect: it is **not a
bound on the effect** (the CI is what bounds it), and a true effect smaller than it may well
have been missed.

A verdict's wording carries its condition, computed from the records' ``params`` of the
variants the test compares (``size_condition``): "at equal size", "at matched size (within X%)"
(largest over smallest count at most ``MATCHED_WITHIN`` above 1, the tolerance the
parameter-matched experiments are built to), else "at unmatched size".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .design import Experiment, Test
from .significance import (
    ALPHA,
    POWER,
    Paired,
    detectable,
    equivalence,
    holm,
    mean_ci,
    omnibus,
    paired,
    slopes,
)
from .stats import auc, by_variant

SCALE = 100.0  # accuracies are fractions; effects are reported in percentage points
MATCHED_WITHIN = 0.10  # largest / smallest parameter count - 1 up to which sizes count as matched


def metric(record: dict, name: str) -> float:
    """A run's value of ``name``: "final_top1", or "auc" (the mean val top-1 over the epochs,
    i.e. the area under the accuracy curve per epoch: higher = learned sooner)."""
    return auc(record["history"]) if name == "auc" else record[name]


def by_seed(records: list[dict], variant: str, name: str) -> dict[int, float]:
    return {record["seed"]: metric(record, name) for record in by_variant(records).get(variant, [])}


def _names(side: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """One side of a test (``a`` or ``b``) as a tuple of variant names."""
    return () if side is None else (side,) if isinstance(side, str) else tuple(side)


def variants_of(test: Test) -> tuple[str, ...]:
    """The variants ``test`` compares: its ``a`` names, then its ``b`` names."""
    return (*_names(test.a), *_names(test.b))


def contrast(test: Test) -> str:
    """What is subtracted from what, in words: "A − B", or a trend's slope of A (− B) per step."""
    if not test.is_trend:
        return f"{test.a} − {test.b}"
    if test.b:
        return (f"slope per step of (A − B): {test.a[0]} − {test.b[0]}, …, "
                f"{test.a[-1]} − {test.b[-1]}")
    return f"slope per step over {test.a[0]} → {test.a[-1]}"


def _count(n: int) -> str:
    """A parameter count to three figures: 1.48M, 188k, 57.6k; below 10,000 in full."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.0f}k" if n >= 1e5 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"


def parameter_counts(records: list[dict], variants: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """The recorded ``params`` of every run of ``variants``."""
    groups = by_variant(records)
    return tuple(record["params"] for variant in variants for record in groups.get(variant, []))


def size_condition(counts: tuple[int, ...] | list[int]) -> str:
    """The size condition of a comparison of networks with these parameter counts: "at equal
    size", "at matched size (within X%)" (largest / smallest - 1 <= MATCHED_WITHIN) or "at
    unmatched size (smallest–largest parameters, their ratio)"."""
    if not counts:
        return "at unrecorded size"
    low, high = min(counts), max(counts)
    if low == high:
        return "at equal size"
    if high / low - 1 <= MATCHED_WITHIN:
        return f"at matched size (within {high / low - 1:.1%})"
    apart = f"{high / low:.1f}x" if high / low >= 1.5 else f"{high / low - 1:.0%} apart"
    return f"at unmatched size ({_count(low)}–{_count(high)} parameters, {apart})"


@dataclass(frozen=True)
class Outcome:
    test: Test
    effect: Paired            # in points (a trend: points per step of its levels)
    per_seed: list[float]     # the per-seed effects (differences, or slopes)
    p_adj: float              # Holm-adjusted within the test's family
    detectable: float         # points: the effect this design had 80% power to detect
    equivalence_p: float      # Holm-adjusted TOST p-value ("equal" claims; nan otherwise)
    word: str                 # supports / contradicts / inconclusive (the module's rule)
    params: tuple[int, ...] = ()  # the recorded parameter counts of the compared variants' runs

    @property
    def unit(self) -> str:
        return "points per step" if self.test.is_trend else "points"

    @property
    def size(self) -> str:
        return size_condition(self.params)

    @property
    def verdict(self) -> str:
        """The verdict line: the word and the size condition it holds under."""
        return f"{self.word} {self.size}"

    @property
    def power(self) -> str:
        """The post-hoc power statement: a property of the design, not a bound on the effect."""
        if not math.isfinite(self.detectable):
            return "one seed: no power to detect anything"
        return (f"this design had {POWER:.0%} power to detect {self.detectable:.2f} {self.unit}, "
                "not a bound on the effect")


def per_seed(records: list[dict], test: Test) -> list[float]:
    """The per-seed effect of ``test`` in points, over the seeds every involved variant has."""
    a_names = _names(test.a)
    variants = variants_of(test)
    series = [by_seed(records, variant, test.metric) for variant in variants]
    missing = [variant for variant, values in zip(variants, series, strict=True) if not values]
    if missing:
        raise ValueError(f"test {test.label!r}: no runs of {', '.join(missing)}")
    seeds = sorted(set.intersection(*(set(values) for values in series)))
    a_series, b_series = series[:len(a_names)], series[len(a_names):]
    rows = [[SCALE * (values[seed] - (b_series[i][seed] if b_series else 0.0))
             for i, values in enumerate(a_series)] for seed in seeds]
    if test.is_trend:
        return slopes(rows, test.levels)
    return [row[0] for row in rows]


def evaluate(exp: Experiment, records: list[dict]) -> list[Outcome]:
    """Every declared test of ``exp``, Holm-adjusted within its family (primary / secondary)."""
    out: list[Outcome] = []
    for family in (True, False):
        tests = [test for test in exp.tests if test.primary == family]
        if not tests:
            continue
        effects = [per_seed(records, test) for test in tests]
        results = [paired(effect, [0.0] * len(effect)) for effect in effects]
        p_adjusted = holm([result.p for result in results])
        equal = [i for i, test in enumerate(tests) if test.claim == "equal"]
        equivalence_adjusted = holm([equivalence(effects[i], [0.0] * len(effects[i]), exp.margin)
                                     for i in equal])
        level = ALPHA / len(tests)
        for i, (test, effect, result, p_adj) in enumerate(zip(tests, effects, results, p_adjusted,
                                                               strict=True)):
            equivalence_p = equivalence_adjusted[equal.index(i)] if i in equal else float("nan")
            out.append(Outcome(test, result, effect, p_adj, detectable(result.sd, result.n, level),
                               equivalence_p, _word(test, result, p_adj, equivalence_p, exp.margin),
                               parameter_counts(records, variants_of(test))))
    return out


def _word(test: Test, result: Paired, p_adj: float, equivalence_p: float, margin: float) -> str:
    """The verdict word of one test, by the rule in the module docstring: the 95% CI
    (``result.low``, ``result.high``) decides, Holm's adjusted p gates."""
    holm_ok = not math.isnan(p_adj) and p_adj < ALPHA
    if test.claim == "equal":
        inside = -margin < result.low and result.high < margin
        if inside and not math.isnan(equivalence_p) and equivalence_p < ALPHA:
            return "supports"
        if holm_ok and (result.low >= margin or result.high <= -margin):
            return "contradicts"
        return "inconclusive"
    if holm_ok and result.low > 0:
        return "supports"
    if holm_ok and result.high < 0:
        return "contradicts"
    return "inconclusive"


def headline(outcomes: list[Outcome]) -> str:
    """The experiment's verdict: its primary tests' words combined (all support -> supports;
    any contradicts -> contradicts; else inconclusive, with the 95% CI and the power of the
    undecided primary test of least power), under the size condition of every variant the
    primary tests compare."""
    primary = [outcome for outcome in outcomes if outcome.test.primary]
    if not primary:
        raise ValueError("no primary test")
    words = [outcome.word for outcome in primary]
    size = size_condition([count for outcome in primary for count in outcome.params])
    if all(word == "supports" for word in words):
        return f"supports {size}"
    if any(word == "contradicts" for word in words):
        return f"contradicts {size}"
    worst = max((outcome for outcome in primary if outcome.word == "inconclusive"),
                key=lambda outcome: outcome.detectable)
    which = f"{worst.test.label}, " if len(primary) > 1 else ""
    effect = worst.effect
    return (f"inconclusive {size}: {which}95% CI [{effect.low:+.2f}, {effect.high:+.2f}] "
            f"{worst.unit}; {worst.power}")


def log_error_ratios(records: list[dict], a: str, b: str, name: str = "final_top1"
                     ) -> dict[int, float]:
    """Seed -> ln(error of ``a`` / error of ``b``), error = 1 − ``name``, over the seeds both
    have: the comparison on a relative scale (below 0: ``a`` makes fewer errors)."""
    a_values, b_values = by_seed(records, a, name), by_seed(records, b, name)
    return {seed: math.log((1 - a_values[seed]) / (1 - b_values[seed]))
            for seed in sorted(set(a_values) & set(b_values))}


def error_ratio(log_ratios: list[float]) -> tuple[float, float, float]:
    """The geometric-mean error ratio over seeds and its 95% CI: the t-interval of the mean
    per-seed log ratio, back-transformed (paired by seed)."""
    mean, low, high = mean_ci(log_ratios)
    return math.exp(mean), math.exp(low), math.exp(high)


def pair_omnibus(exp: Experiment, records: list[dict]) -> tuple[Paired, float, float, int]:
    """Where the variants form pairs (``exp.pairs``: factor A x factor B), the two-way omnibus
    on the primary metric, as per-seed gaps a − b (points): the main effect of A (the mean gap
    over the pairs, t-tested against 0 across seeds) and the A x B interaction (do the gaps
    differ between the pairs? repeated-measures ANOVA on the gaps). (main, F, p, seeds)."""
    gaps = [per_seed(records, Test("", a, b, metric=exp.primary_metric)) for a, b in exp.pairs]
    seeds = min(len(gap) for gap in gaps)
    table = [[gap[i] for gap in gaps] for i in range(seeds)]
    means = [sum(row) / len(row) for row in table]
    main = paired(means, [0.0] * len(means))
    f_statistic, p = omnibus(table)
    return main, f_statistic, p, seeds


def omnibus_test(exp: Experiment, records: list[dict]) -> tuple[float, float, int]:
    """Repeated-measures ANOVA over every variant on the primary metric: (F, p, seeds used)."""
    series = [by_seed(records, variant.name, exp.primary_metric) for variant in exp.variants]
    seeds = sorted(set.intersection(*(set(values) for values in series)))
    f_statistic, p = omnibus([[values[seed] for values in series] for seed in seeds])
    return f_statistic, p, len(seeds)
