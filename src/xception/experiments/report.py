"""The Markdown report: what was declared before the runs, the verdict, every test with its
confidence interval, the convergence table, the confounds, the plots and the setup.

The "Declared" section is written from the experiment's definition (definitions.py), which is
fixed before any run: the primary metric, each comparison with its claimed direction, the
families Holm's correction runs over and the equivalence margin. Nothing in it depends on the
numbers.
"""

from __future__ import annotations

import math

from .definitions import Experiment, Test
from .significance import ALPHA, POWER
from .stats import to_markdown
from .verdicts import Outcome, headline, omnibus_test

METRICS = {"final_top1": "final validation top-1 after the last epoch",
           "auc": "area under the validation top-1 curve (mean over the epochs)"}


def _claim(t: Test, margin: float) -> str:
    a = t.a if isinstance(t.a, str) else ", ".join(t.a)
    if t.is_trend:
        per = f" minus ({', '.join(t.b)})" if t.b else ""
        what = f"per-seed slope of ({a}){per} against levels {list(t.levels)}"
        return f"{what}: claimed > 0"
    if t.claim == "equal":
        return f"{a} − {t.b}: claimed within ±{margin} points (equivalence test)"
    return f"{a} − {t.b}: claimed > 0"


def declared(exp: Experiment) -> list[str]:
    lines = [f"- Primary metric: {METRICS[exp.primary_metric]}, in percentage points; BatchNorm "
             "statistics recomputed on training batches before every evaluation.",
             "- Every variant uses the same seeds (initialisation, data order, augmentation); "
             "tests are paired by seed (paired t-test; a trend: per-seed least-squares slopes, "
             "t-tested against 0). 95% confidence intervals.",
             f"- Holm's correction within each family below at α = {ALPHA}; verdict words: "
             "supports / contradicts / inconclusive (could detect ≥ X: the smallest true effect "
             f"found with {POWER:.0%} power at α / family size, from the observed spread)."]
    for primary in (True, False):
        tests = [t for t in exp.tests if t.primary == primary]
        if tests:
            lines.append(f"- {'Primary' if primary else 'Secondary'} tests "
                         f"({'decide the verdict' if primary else 'reported, not in the verdict'}):")
            lines += [f"  - {t.label} — {METRICS[t.metric].split(' (')[0]}; {_claim(t, exp.margin)}"
                      for t in tests]
    if any(t.claim == "equal" for t in exp.tests):
        lines.append(f"- Equivalence margin: ±{exp.margin} points (paired TOST, Holm-adjusted).")
    return lines


def _p(p: float, equals: str = "") -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{equals}{p:.3f}")


def outcome_table(outcomes: list[Outcome]) -> list[str]:
    head = ["test", "family", "metric", "effect", "95% CI", "p", "Holm p", "TOST p (Holm)",
            "could detect", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in outcomes:
        e, unit = o.effect, "pts/step" if o.test.is_trend else "pts"
        lines.append("| " + " | ".join([
            o.test.label, "primary" if o.test.primary else "secondary", o.test.metric,
            f"{e.diff:+.2f} {unit}", f"[{e.low:+.2f}, {e.high:+.2f}]", _p(e.p), _p(o.p_adj),
            _p(o.equivalence_p), f"{o.detectable:.2f} {unit}", o.verdict]) + " |")
    return lines


def render(exp: Experiment, records: list[dict], rows: list[dict], outcomes: list[Outcome],
           setup: list[str], plots: list[str]) -> str:
    """The whole report as Markdown."""
    f, p, n = omnibus_test(exp, records)
    omni = (f"Omnibus (repeated-measures ANOVA over all {len(exp.variants)} variants, "
            f"{n} seeds, primary metric): F = {f:.2f}, p {_p(p, '= ')}." if not math.isnan(f)
            else "Omnibus test: needs ≥ 2 seeds of every variant.")
    lines = [f"# Experiment `{exp.name}`", "", f"**Question.** {exp.question}", "",
             f"**Claim.** {exp.claim}", "", "## Declared before the runs", "", *declared(exp), "",
             "## Verdict", "", f"**{headline(outcomes)}** (the primary tests' verdicts combined).",
             "", *outcome_table(outcomes), "", omni, ""]
    if all(r["final_top1"][0] >= 0.99 for r in rows):
        lines += ["Every variant reaches ≥ 99%: at this budget the data cannot separate them.", ""]
    lines += ["## Confounds", "", exp.confounds, "",
              "## Results", "", "Mean [95% CI] over seeds. Convergence: the training loss's "
              "change over the last epoch, and that change as a share of its whole fall since "
              "epoch 1 (a few percent: the run had flattened; the schedule ends near lr 0). "
              "Training img/s were measured while other runs shared the CPU: not a speed "
              "comparison.", "",
              to_markdown(rows), "", *(f"![{name}]({name}.png)" for name in plots), "",
              "## Setup", "", *(f"- {s}" for s in setup), ""]
    return "\n".join(lines)
