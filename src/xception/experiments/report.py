"""The Markdown report: what was declared before the runs, the verdict, every test with its
confidence interval, the convergence table, the confounds, the plots and the setup (``describe``);
``write_plots`` draws the plots it shows.

The "Declared" section is written from the experiment's definition (definitions.py), which is
fixed before any run: the primary metric, each comparison with its claimed direction, the
families Holm's correction runs over and the equivalence margin. Nothing in it depends on the
numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .budget import budget_reason
from .definitions import Experiment, Test
from .plots import Effect, plot_benefit, plot_cost, plot_curves, plot_effects, plot_summary
from .significance import ALPHA, POWER
from .stats import to_markdown
from .verdicts import Outcome, headline, omnibus_test, per_seed

if TYPE_CHECKING:
    from ..config import RunConfig

METRICS = {"final_top1": "final validation top-1 after the last epoch",
           "auc": "area under the validation top-1 curve (mean over the epochs)"}


def _claim(test: Test, margin: float) -> str:
    first = test.a if isinstance(test.a, str) else ", ".join(test.a)
    if test.is_trend:
        per = f" minus ({', '.join(test.b)})" if test.b else ""
        what = f"per-seed slope of ({first}){per} against levels {list(test.levels)}"
        return f"{what}: claimed > 0"
    if test.claim == "equal":
        return f"{first} − {test.b}: claimed within ±{margin} points (equivalence test)"
    return f"{first} − {test.b}: claimed > 0"


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
            lines += [f"  - {test.label} — {METRICS[test.metric].split(' (')[0]}; "
                      f"{_claim(test, exp.margin)}" for test in tests]
    if any(t.claim == "equal" for t in exp.tests):
        lines.append(f"- Equivalence margin: ±{exp.margin} points (paired TOST, Holm-adjusted).")
    return lines


def _p_value(p: float, equals: str = "") -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{equals}{p:.3f}")


def outcome_table(outcomes: list[Outcome]) -> list[str]:
    head = ["test", "family", "metric", "effect", "95% CI", "p", "Holm p", "TOST p (Holm)",
            "could detect", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for outcome in outcomes:
        effect, unit = outcome.effect, "pts/step" if outcome.test.is_trend else "pts"
        lines.append("| " + " | ".join([
            outcome.test.label, "primary" if outcome.test.primary else "secondary",
            outcome.test.metric, f"{effect.diff:+.2f} {unit}",
            f"[{effect.low:+.2f}, {effect.high:+.2f}]", _p_value(effect.p),
            _p_value(outcome.p_adj), _p_value(outcome.equivalence_p),
            f"{outcome.detectable:.2f} {unit}", outcome.verdict]) + " |")
    return lines


def render(exp: Experiment, records: list[dict], rows: list[dict], outcomes: list[Outcome],
           setup: list[str], plots: list[str]) -> str:
    """The whole report as Markdown."""
    f_statistic, p, seeds = omnibus_test(exp, records)
    omni = (f"Omnibus (repeated-measures ANOVA over all {len(exp.variants)} variants, "
            f"{seeds} seeds, primary metric): F = {f_statistic:.2f}, p {_p_value(p, '= ')}."
            if not math.isnan(f_statistic) else "Omnibus test: needs ≥ 2 seeds of every variant.")
    lines = [f"# Experiment `{exp.name}`", "", f"**Question.** {exp.question}", "",
             f"**Claim.** {exp.claim}", "", "## Declared before the runs", "", *declared(exp), "",
             "## Verdict", "", f"**{headline(outcomes)}** (the primary tests' verdicts combined).",
             "", *outcome_table(outcomes), "", omni, ""]
    if all(row["final_top1"][0] >= 0.99 for row in rows):
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


def describe(base: RunConfig, exp: Experiment, seeds: int, records: list[dict], seconds: float,
             command: str) -> list[str]:
    """The setup lines of the report: data, budget, model, seeds, each run's environment, time."""
    train, data = base.train, base.data
    length = f"{train.max_steps} steps" if train.max_steps else f"{train.epochs} epochs"
    return [
        f"command: `{command}`",
        f"data: {data.name}, {data.image_size} px, training subset {data.train_subset or 'all'} "
        f"images, validation {data.val_subset or 'all'} images of the fixed validation split",
        f"budget: {length}, batch {train.batch_size}, {base.optimizer.name} lr "
        f"{base.optimizer.lr}, {base.schedule.name} schedule, BatchNorm statistics from "
        f"{train.bn_recalibration} training batches before each evaluation; the same for every "
        "variant",
        f"model: {base.model.name} with {base.model.overrides}",
        f"seeds: {', '.join(map(str, range(seeds)))} (initialisation, data order, augmentation)",
        f"why this budget: {budget_reason(data.name)}",
        *environment_lines(records),
        f"time: {sum(record['seconds'] for record in records):.0f} s of training and evaluation over "
        f"{len(records)} runs (each timed when it ran); this invocation took {seconds:.0f} s, "
        "reusing runs already in runs.jsonl",
        *shared_line(records),
    ]


def environment_lines(records: list[dict]) -> list[str]:
    """Each run's own environment (a copied or older run keeps its own), grouped: machine,
    threads, Python and torch, code commit, numerics version."""
    groups: dict[str, int] = {}
    for record in records:
        env = record.get("environment")
        if env is None:
            text = ("not recorded (made before run records carried their environment and "
                    "numerics version)")
        else:
            code = env["commit"][:10] if env.get("commit") else "unknown"
            text = (f"{env['machine']} ({env['cpu']}), {env['threads']} CPU thread(s), Python "
                    f"{env['python']}, torch {env['torch']}, code {code}"
                    f"{' with uncommitted changes' if env.get('dirty') else ''}, numerics "
                    f"version {env['numerics']}")
        groups[text] = groups.get(text, 0) + 1
    return [f"environment of {count} of {len(records)} runs: {text}"
            for text, count in groups.items()]


def shared_line(records: list[dict]) -> list[str]:
    """Which runs were trained once for a neighbouring experiment (the same network, budget
    and seed) and copied here: said, because the experiments' results are then not independent."""
    reused = [record for record in records if record.get("reused_from")]
    if not reused:
        return []
    where = sorted({f"{record['reused_from']['folder']}'s {record['reused_from']['variant']!r} "
                    f"as {record['variant']!r}" for record in reused})
    own = sum(record["seconds"] for record in records if not record.get("reused_from"))
    return [f"shared runs: {len(reused)} of {len(records)} runs were trained once for a "
            f"neighbouring experiment with the identical network, budget and seed and copied "
            f"(`reused_from` in runs.jsonl): {'; '.join(where)}; {own:.0f} s in the runs "
            "trained for this experiment"]


def write_plots(exp: Experiment, records: list[dict], outcomes: list[Outcome], out: Path
                ) -> list[str]:
    """Curves, per-seed summary, effects (and cost / benefit plots where they apply); returns
    the plots' names, as the report links them."""
    plot_curves(records, out / "curves.png", exp.name)
    plot_summary(records, out / "summary.png", exp.name)
    plot_effects([Effect(outcome.test.label, outcome.per_seed, outcome.effect.diff,
                         outcome.effect.low, outcome.effect.high, outcome.verdict.split(" (")[0])
                  for outcome in outcomes],
                 out / "effects.png", exp.name,
                 unit="points; a trend: points per step"
                 if any(outcome.test.is_trend for outcome in outcomes) else "points")
    names = ["curves", "summary", "effects"]
    if exp.name.startswith("spectrum"):
        plot_cost(records, out / "cost.png", exp.name)
        names.append("cost")
    trend = next((outcome.test for outcome in outcomes
                  if outcome.test.is_trend and outcome.test.b), None)
    if trend is not None:  # compression: the residual benefit at each ratio
        per_level = [per_seed(records, Test(trend.label, a, b, metric=trend.metric))
                     for a, b in zip(trend.a, trend.b, strict=True)]
        plot_benefit([2 ** level for level in trend.levels], per_level, out / "benefit.png",
                     exp.name)
        names.append("benefit")
    return names
