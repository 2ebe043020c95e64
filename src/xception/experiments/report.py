"""The Markdown report: what was declared before the runs, the verdict, every test with its
confidence interval, the convergence table, the confounds, the plots and the setup (``describe``);
``write_plots`` draws the plots it shows.

The "Declared" section is written from the experiment's definition (definitions.py), which is
fixed before any run: the primary metric, each comparison with its claimed direction, the
families Holm's correction runs over and the equivalence margin. Nothing in it depends on the
numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .budget import budget_reason
from .design import Experiment, Test
from .plots import Effect, plot_benefit, plot_cost, plot_curves, plot_effects, plot_summary
from .significance import ALPHA, POWER, paired, slopes
from .stats import to_markdown
from .verdicts import (
    MATCHED_WITHIN,
    SCALE,
    Outcome,
    by_seed,
    contrast,
    error_ratio,
    headline,
    log_error_ratios,
    omnibus_test,
    pair_omnibus,
    per_seed,
)

if TYPE_CHECKING:
    from ..config import RunConfig

METRICS = {"final_top1": "final validation top-1 after the last epoch",
           "auc": "area under the validation top-1 curve (mean over the epochs)",
           "test_top1": "test top-1 (the test split, evaluated once, after the last epoch)"}


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
             f"- Holm's correction within each family below at α = {ALPHA}.", *verdict_rule(),
             *exp.declarations]
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


def verdict_rule() -> list[str]:
    """The verdict rule as the report states it (verdicts.py's docstring is its one statement)."""
    return [
        "- Verdict rule: each verdict is read off the test's 95% CI and counts only where its "
        f"Holm-adjusted p-value is also < {ALPHA}. A \"> 0\" claim: **supports** if the whole "
        "CI is above 0, **contradicts** if the whole CI is below 0 (Holm-adjusted paired p < α "
        "either way). An \"equal\" claim (margin ±m): **supports** if the whole CI is inside "
        "(−m, +m) and the Holm-adjusted equivalence test (paired TOST at ±m) has p < α; "
        "**contradicts** if the whole CI is outside the margin on one side (low ≥ +m or high "
        "≤ −m) and the Holm-adjusted paired p < α. Anything else is **inconclusive** (a mean "
        "beyond the margin whose CI reaches into it too).",
        f"- Beside each CI: the effect this design had {POWER:.0%} power to detect (post-hoc "
        "power of the paired t-test at α / family size, from the observed spread). It describes "
        "the design, not the effect: **not a bound on the effect**; a smaller true effect may "
        "have been missed.",
        "- Each verdict names the size condition it holds under, from the recorded parameter "
        "counts of the variants it compares: at equal size, at matched size (largest / smallest "
        f"count within {MATCHED_WITHIN:.0%}), or at unmatched size."]


def _p_value(p: float, equals: str = "") -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{equals}{p:.3f}")


def outcome_table(outcomes: list[Outcome]) -> list[str]:
    head = ["test", "family", "metric", "effect of", "effect", "95% CI",
            f"{POWER:.0%} power to detect (not a bound)", "p", "Holm p", "TOST p (Holm)",
            "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for outcome in outcomes:
        effect, unit = outcome.effect, "pts/step" if outcome.test.is_trend else "pts"
        lines.append("| " + " | ".join([
            outcome.test.label, "primary" if outcome.test.primary else "secondary",
            outcome.test.metric, contrast(outcome.test), f"{effect.diff:+.2f} {unit}",
            f"[{effect.low:+.2f}, {effect.high:+.2f}]", f"{outcome.detectable:.2f} {unit}",
            _p_value(effect.p), _p_value(outcome.p_adj), _p_value(outcome.equivalence_p),
            outcome.verdict]) + " |")
    return lines


def relative_scale(exp: Experiment, records: list[dict]) -> list[str]:
    """Where a trend test compares variants with baselines level by level (compression), the
    same comparisons on a relative scale: the error-rate ratio A / B per level and its trend.
    Descriptive: added after the runs, so not declared, in no Holm family, not in the verdict."""
    trend = next((test for test in exp.tests if test.is_trend and test.b), None)
    if trend is None:
        return []
    per_level = [log_error_ratios(records, a, b, trend.metric)
                 for a, b in zip(trend.a, trend.b, strict=True)]
    lines = ["### Relative scale (descriptive: added after the runs, so not a declared test, in "
             "no Holm family and not in the verdict)", "",
             f"Error rate = 100% − {METRICS[trend.metric].split(' (')[0]}. Per seed, the ratio "
             "error(A) / error(B); shown: the geometric mean over seeds with the 95% CI of the "
             "mean per-seed log ratio (t-based, paired by seed), back-transformed. Below 1: A "
             "makes fewer errors than B. The trend row: the per-seed slope of the log ratio "
             "against the levels, as the factor by which the ratio changes per step.", "",
             "| A | B | absolute: A − B, points [95% CI] | relative: error A / error B [95% CI] |",
             "|---|---|---|---|"]
    for a, b, logs in zip(trend.a, trend.b, per_level, strict=True):
        differences = per_seed(records, Test("", a, b, metric=trend.metric))
        absolute = paired(differences, [0.0] * len(differences))
        ratio, low, high = error_ratio(list(logs.values()))
        lines.append(f"| {a} | {b} | {absolute.diff:+.2f} [{absolute.low:+.2f}, "
                     f"{absolute.high:+.2f}] | {ratio:.3f} [{low:.3f}, {high:.3f}] |")
    seeds = sorted(set.intersection(*(set(logs) for logs in per_level)))
    log_slopes = slopes([[logs[seed] for logs in per_level] for seed in seeds], trend.levels)
    slope = paired(log_slopes, [0.0] * len(log_slopes))
    benefit_slopes = per_seed(records, trend)
    absolute = paired(benefit_slopes, [0.0] * len(benefit_slopes))
    lines.append(f"| trend over the rows above: slope per step | | {absolute.diff:+.2f} pts/step "
                 f"[{absolute.low:+.2f}, {absolute.high:+.2f}] | ×{math.exp(slope.diff):.3f} per "
                 f"step [{math.exp(slope.low):.3f}, {math.exp(slope.high):.3f}] |")
    return [*lines, ""]


def omnibus_line(exp: Experiment, records: list[dict]) -> str:
    """The omnibus test: one repeated-measures ANOVA over every variant, or, where the variants
    form pairs (``exp.pairs``), the pairs' main effect and interaction (``pair_omnibus``)."""
    if exp.pairs:
        main, f_statistic, p, seeds = pair_omnibus(exp, records)
        if seeds < 2:
            return "Omnibus test: needs ≥ 2 seeds of every variant."
        first, last = exp.pairs[0], exp.pairs[-1]
        return (f"Omnibus (two-way, repeated measures over {seeds} seeds, primary metric, on the "
                f"per-seed gaps {first[0]} − {first[1]}, …, {last[0]} − {last[1]}): main effect "
                f"(the mean gap over the {len(exp.pairs)} pairs) {main.diff:+.2f} points, 95% CI "
                f"[{main.low:+.2f}, {main.high:+.2f}], p {_p_value(main.p, '= ')}; interaction "
                f"(do the gaps differ between the pairs? repeated-measures ANOVA on the gaps) "
                f"F = {f_statistic:.2f}, p {_p_value(p, '= ')}.")
    f_statistic, p, seeds = omnibus_test(exp, records)
    if math.isnan(f_statistic):
        return "Omnibus test: needs ≥ 2 seeds of every variant."
    return (f"Omnibus (repeated-measures ANOVA over all {len(exp.variants)} variants, "
            f"{seeds} seeds, primary metric): F = {f_statistic:.2f}, p {_p_value(p, '= ')}.")


def speed_lines(speed: dict | None) -> list[str]:
    """The side-by-side training speed (``speed.json``, see ``runner.measure_speed``)."""
    if not speed:
        return []
    rates = speed["img_per_s"]
    (a, rate_a), (b, rate_b) = rates.items()
    env = speed["environment"]
    return ["### Training speed, side by side (CPU)", "",
            f"{a}: {rate_a:.0f} training images/s; {b}: {rate_b:.0f} images/s; ratio "
            f"{a} / {b} = {rate_a / rate_b:.2f} (the paper, on K80 GPUs: Xception 28 vs Inception "
            f"V3 31 steps/s = 0.90). One SGD step (fp32, batch {speed['batch']}, "
            f"{speed['image_size']} px) of each network in turn, median of {speed['reps']} "
            f"repetitions, in one process on {env['machine']} ({env['cpu']}), {env['threads']} "
            f"thread(s), torch {env['torch']}; load average {speed['load']:.1f} when measured "
            "(other runs on the machine slow both networks alike, the turns spread drift over "
            "both). A CPU figure: it says nothing of GPU speed.", ""]


def render(exp: Experiment, records: list[dict], rows: list[dict], outcomes: list[Outcome],
           setup: list[str], plots: list[str], speed: dict | None = None) -> str:
    """The whole report as Markdown (``speed``: the side-by-side timing, where measured)."""
    omni = omnibus_line(exp, records)
    lines = [f"# Experiment `{exp.name}`", "", f"**Question.** {exp.question}", "",
             f"**Claim.** {exp.claim}", "", "## Declared before the runs", "", *declared(exp), "",
             "## Verdict", "", f"**{headline(outcomes)}** (the primary tests' verdicts combined).",
             "", *outcome_table(outcomes), "", omni, "", *relative_scale(exp, records),
             *speed_lines(speed)]
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


def describe(configs: list[RunConfig], exp: Experiment, seeds: int, records: list[dict],
             seconds: float, command: str) -> list[str]:
    """The setup lines of the report: data, budget, model, seeds, each run's environment, time.
    ``configs``: each variant's run config (seed 0); what differs between them is listed."""
    first = configs[0]
    train, data = first.train, first.data
    length = f"{train.max_steps} steps" if train.max_steps else f"{train.epochs} epochs"
    validation = (f"validation: {data.val_holdout:,} images held out of the training images "
                  f"(stratified, split seed {data.split_seed}); the test split evaluated once, "
                  "after the last epoch" if data.val_holdout else
                  f"validation: {data.val_subset or 'all'} images of the fixed validation split")
    models = {(cfg.model.name, json.dumps(cfg.model.overrides, sort_keys=True)): cfg
              for cfg in configs}
    return [
        f"command: `{command}`",
        f"data: {data.name}, {data.image_size} px, training subset {data.train_subset or 'all'} "
        f"images; {validation}",
        f"budget: {length}, batch {train.batch_size}, {first.optimizer.name} lr "
        f"{first.optimizer.lr}, {first.schedule.name} schedule, BatchNorm statistics from "
        f"{train.bn_recalibration} training batches before each evaluation; the same for every "
        "variant" + ("" if len(configs) < 2 or not _differing(configs) else
                     " except where listed below"),
        *(f"model: {name} with {cfg.model.overrides}" for (name, _), cfg in models.items()),
        *(f"differs between the variants: {key} = {' / '.join(values)}"
          for key, values in _differing(configs).items()),
        f"seeds: {', '.join(map(str, range(seeds)))} (initialisation, data order, augmentation)",
        f"why this budget: {exp.budget_reason or budget_reason(data.name)}",
        *environment_lines(records),
        f"time: {sum(record['seconds'] for record in records):.0f} s of training and evaluation over "
        f"{len(records)} runs (each timed when it ran); this invocation took {seconds:.0f} s, "
        "reusing runs already in runs.jsonl",
        *shared_line(records),
    ]


def _differing(configs: list[RunConfig]) -> dict[str, list[str]]:
    """``section.key`` -> its distinct values (in first-seen order) where the variants' configs
    differ, the model section left out (its lines name every network)."""
    flat = [{f"{section}.{key}": json.dumps(value, sort_keys=True)
             for section, values in cfg.to_dict().items() if section != "model"
             for key, value in values.items()} for cfg in configs]
    out: dict[str, list[str]] = {}
    for key in flat[0]:
        values = list(dict.fromkeys(entry.get(key, "unset") for entry in flat))
        if len(values) > 1:
            out[key] = values
    return out


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
    metric = exp.primary_metric
    plot_summary(records, out / "summary.png", exp.name, metric, f"{METRICS[metric].split(' (')[0]} (%)")
    plot_effects([Effect(outcome.test.label, outcome.per_seed, outcome.effect.diff,
                         outcome.effect.low, outcome.effect.high, outcome.verdict,
                         contrast(outcome.test), outcome.test.is_trend,
                         exp.margin if outcome.test.claim == "equal" else None)
                  for outcome in outcomes],
                 out / "effects.png", exp.name)
    names = ["curves", "summary", "effects"]
    if exp.name.startswith("spectrum"):
        plot_cost(records, out / "cost.png", exp.name)
        names.append("cost")
    trend = next((outcome.test for outcome in outcomes
                  if outcome.test.is_trend and outcome.test.b), None)
    if trend is not None:  # compression: the residual benefit at each ratio, a line per seed
        series = [(by_seed(records, a, trend.metric), by_seed(records, b, trend.metric))
                  for a, b in zip(trend.a, trend.b, strict=True)]
        seeds = sorted(set.intersection(*(set(a) & set(b) for a, b in series)))
        per_level = [[SCALE * (a[seed] - b[seed]) for seed in seeds] for a, b in series]
        plot_benefit([2 ** level for level in trend.levels], per_level, out / "benefit.png",
                     exp.name, exp.factor, f"{METRICS[trend.metric].split(' (')[0]}, A − B (points)",
                     contrast=contrast(trend).split(": ", 1)[-1], seeds=seeds,
                     ticks=exp.factor_ticks or None)
        names.append("benefit")
    return names
