"""Each declared test of an experiment, computed on its runs, and the verdict it supports.

Verdict words are three: **supports**, **contradicts**, **inconclusive (could detect >= X)**.
A "greater" claim is supported when its Holm-adjusted paired p-value is below 0.05 with the
effect in the claimed direction, contradicted when it is below 0.05 the other way. An "equal"
claim is supported only by an equivalence test (paired TOST at the experiment's margin,
Holm-adjusted), contradicted by a significant difference at least as large as the margin. X is
the smallest true effect the test would have found with 80% power at the strictest level Holm
can use in its family (alpha / number of tests), from the observed spread of the paired
differences: an effect at least that large is unlikely to have been missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .definitions import Experiment, Test
from .significance import ALPHA, Paired, detectable, equivalence, holm, omnibus, paired, slopes
from .stats import auc, by_variant

SCALE = 100.0  # accuracies are fractions; effects are reported in percentage points


def metric(record: dict, name: str) -> float:
    """A run's value of ``name``: "final_top1", or "auc" (the mean val top-1 over the epochs,
    i.e. the area under the accuracy curve per epoch: higher = learned sooner)."""
    return auc(record["history"]) if name == "auc" else record[name]


def by_seed(records: list[dict], variant: str, name: str) -> dict[int, float]:
    return {record["seed"]: metric(record, name) for record in by_variant(records).get(variant, [])}


@dataclass(frozen=True)
class Outcome:
    test: Test
    effect: Paired            # in points (a trend: points per step of its levels)
    per_seed: list[float]     # the per-seed effects (differences, or slopes)
    p_adj: float              # Holm-adjusted within the test's family
    detectable: float         # points, 80% power at alpha / family size
    equivalence_p: float      # Holm-adjusted TOST p-value ("equal" claims; nan otherwise)
    verdict: str


def per_seed(records: list[dict], test: Test) -> list[float]:
    """The per-seed effect of ``test`` in points, over the seeds every involved variant has."""
    a_names = (test.a,) if isinstance(test.a, str) else test.a
    b_names = () if test.b is None else ((test.b,) if isinstance(test.b, str) else test.b)
    variants = (*a_names, *b_names)
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
            smallest = detectable(result.sd, result.n, level)
            out.append(Outcome(test, result, effect, p_adj, smallest, equivalence_p,
                               _word(test, result, p_adj, equivalence_p, smallest, exp.margin)))
    return out


def _word(test: Test, result: Paired, p_adj: float, equivalence_p: float, smallest: float,
          margin: float) -> str:
    """The verdict word of one test; ``smallest``: the effect it could have detected."""
    significant = not math.isnan(p_adj) and p_adj < ALPHA
    unit = "points per step" if test.is_trend else "points"
    if test.claim == "equal":
        if not math.isnan(equivalence_p) and equivalence_p < ALPHA:
            return "supports"
        if significant and abs(result.diff) >= margin:
            return "contradicts"
    elif significant:
        return "supports" if result.diff > 0 else "contradicts"
    return f"inconclusive (could detect ≥ {smallest:.2f} {unit})" if math.isfinite(smallest) else \
        "inconclusive (one seed: nothing can be detected)"


def headline(outcomes: list[Outcome]) -> str:
    """The experiment's verdict: its primary tests' words combined (all support -> supports;
    any contradicts -> contradicts; else inconclusive, with the largest detectable effect)."""
    words = [outcome.verdict for outcome in outcomes if outcome.test.primary]
    if words and all(word == "supports" for word in words):
        return "supports"
    if any(word == "contradicts" for word in words):
        return "contradicts"
    undecided = [outcome for outcome in outcomes
                 if outcome.test.primary and outcome.verdict.startswith("inconclusive")]
    worst = max(undecided, key=lambda outcome: outcome.detectable)
    return worst.verdict


def omnibus_test(exp: Experiment, records: list[dict]) -> tuple[float, float, int]:
    """Repeated-measures ANOVA over every variant on the primary metric: (F, p, seeds used)."""
    series = [by_seed(records, variant.name, exp.primary_metric) for variant in exp.variants]
    seeds = sorted(set.intersection(*(set(values) for values in series)))
    f_statistic, p = omnibus([[values[seed] for values in series] for seed in seeds])
    return f_statistic, p, len(seeds)
