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
    return {r["seed"]: metric(r, name) for r in by_variant(records).get(variant, [])}


@dataclass(frozen=True)
class Outcome:
    test: Test
    effect: Paired            # in points (a trend: points per step of its levels)
    per_seed: list[float]     # the per-seed effects (differences, or slopes)
    p_adj: float              # Holm-adjusted within the test's family
    detectable: float         # points, 80% power at alpha / family size
    equivalence_p: float      # Holm-adjusted TOST p-value ("equal" claims; nan otherwise)
    verdict: str


def per_seed(records: list[dict], t: Test) -> list[float]:
    """The per-seed effect of ``t`` in points, over the seeds every involved variant has."""
    a = (t.a,) if isinstance(t.a, str) else t.a
    b = () if t.b is None else ((t.b,) if isinstance(t.b, str) else t.b)
    series = [by_seed(records, v, t.metric) for v in (*a, *b)]
    missing = [v for v, s in zip((*a, *b), series, strict=True) if not s]
    if missing:
        raise ValueError(f"test {t.label!r}: no runs of {', '.join(missing)}")
    seeds = sorted(set.intersection(*(set(s) for s in series)))
    va, vb = series[:len(a)], series[len(a):]
    rows = [[SCALE * (x[s] - (vb[i][s] if vb else 0.0)) for i, x in enumerate(va)] for s in seeds]
    if t.is_trend:
        return slopes(rows, t.levels)
    return [row[0] for row in rows]


def evaluate(exp: Experiment, records: list[dict]) -> list[Outcome]:
    """Every declared test of ``exp``, Holm-adjusted within its family (primary / secondary)."""
    out: list[Outcome] = []
    for family in (True, False):
        tests = [t for t in exp.tests if t.primary == family]
        if not tests:
            continue
        effects = [per_seed(records, t) for t in tests]
        results = [paired(e, [0.0] * len(e)) for e in effects]
        adj = holm([r.p for r in results])
        equal = [i for i, t in enumerate(tests) if t.claim == "equal"]
        eq_adj = holm([equivalence(effects[i], [0.0] * len(effects[i]), exp.margin)
                       for i in equal])
        level = ALPHA / len(tests)
        for i, (t, e, r, p) in enumerate(zip(tests, effects, results, adj, strict=True)):
            eq = eq_adj[equal.index(i)] if i in equal else float("nan")
            x = detectable(r.sd, r.n, level)
            out.append(Outcome(t, r, e, p, x, eq, _word(t, r, p, eq, x, exp.margin)))
    return out


def _word(t: Test, r: Paired, p: float, eq: float, x: float, margin: float) -> str:
    significant = not math.isnan(p) and p < ALPHA
    unit = "points per step" if t.is_trend else "points"
    if t.claim == "equal":
        if not math.isnan(eq) and eq < ALPHA:
            return "supports"
        if significant and abs(r.diff) >= margin:
            return "contradicts"
    elif significant:
        return "supports" if r.diff > 0 else "contradicts"
    return f"inconclusive (could detect ≥ {x:.2f} {unit})" if math.isfinite(x) else \
        "inconclusive (one seed: nothing can be detected)"


def headline(outcomes: list[Outcome]) -> str:
    """The experiment's verdict: its primary tests' words combined (all support -> supports;
    any contradicts -> contradicts; else inconclusive, with the largest detectable effect)."""
    words = [o.verdict for o in outcomes if o.test.primary]
    if words and all(w == "supports" for w in words):
        return "supports"
    if any(w == "contradicts" for w in words):
        return "contradicts"
    undecided = [o for o in outcomes if o.test.primary and o.verdict.startswith("inconclusive")]
    worst = max(undecided, key=lambda o: o.detectable)
    return worst.verdict


def omnibus_test(exp: Experiment, records: list[dict]) -> tuple[float, float, int]:
    """Repeated-measures ANOVA over every variant on the primary metric: (F, p, seeds used)."""
    series = [by_seed(records, v.name, exp.primary_metric) for v in exp.variants]
    seeds = sorted(set.intersection(*(set(s) for s in series)))
    f, p = omnibus([[s[k] for s in series] for k in seeds])
    return f, p, len(seeds)
