"""The Markdown report: the question, the claim, the table, and a verdict read off the numbers.

Verdicts use Welch's t-test on per-seed values (alpha 0.05). With three seeds the test has little
power, so "inconclusive" is a common and honest answer; the spread is always shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .definitions import Experiment
from .stats import by_variant, interaction, to_markdown, value_at, welch

ALPHA = 0.05


def values(records: list[dict], variant: str, metric: str) -> list[float]:
    runs = by_variant(records)[variant]
    if metric == "early_loss":  # val loss a quarter into training: convergence speed
        return [value_at(r["history"], 0.25) for r in runs]
    return [r[metric] for r in runs]


class Contrast:
    """a - b on one metric over seeds, with Welch's p-value."""

    def __init__(self, records: list[dict], a: str, b: str, metric: str = "final_top1") -> None:
        self.a, self.b, self.metric = a, b, metric
        self.diff, self.p = welch(values(records, a, metric), values(records, b, metric))

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA

    def __str__(self) -> str:
        p = "n/a (one seed)" if math.isnan(self.p) else f"{self.p:.3f}"
        if self.metric == "early_loss":
            return f"val loss at 25% of training, {self.a} − {self.b} = {self.diff:+.3f} (p = {p})"
        return f"final val top-1, {self.a} − {self.b} = {100 * self.diff:+.2f} points (p = {p})"


def _ranking(records: list[dict]) -> list[str]:
    means = {v: sum(values(records, v, "final_top1")) / len(values(records, v, "final_top1"))
             for v in by_variant(records)}
    return sorted(means, key=means.get, reverse=True)


def verdict_residual(records: list[dict]) -> list[str]:
    final = Contrast(records, "residual", "no residual")
    early = Contrast(records, "residual", "no residual", "early_loss")
    if final.diff > 0 and final.significant and early.diff < 0:
        head = "**Reproduces**: residual connections converge faster and end higher."
    elif final.significant and final.diff < 0:
        head = "**Does not reproduce**: the model without residual connections ends higher."
    elif early.significant and early.diff < 0:
        head = ("**Partly reproduces**: residual connections converge faster; the final accuracy "
                "difference is not significant.")
    else:
        head = "**Inconclusive at this scale**: no significant difference."
    return [head, f"- {final}", f"- {early}"]


def verdict_activation(records: list[dict]) -> list[str]:
    order = _ranking(records)
    claimed = ["none", "ELU", "ReLU"]
    pairs = [Contrast(records, a, b) for a, b in (("none", "ELU"), ("ELU", "ReLU"),
                                                  ("none", "ReLU"))]
    if order == claimed:
        head = "**The paper's ranking reproduces** (none > ELU > ReLU, by mean final accuracy)"
        head += "; significant at alpha 0.05: " + (
            ", ".join(f"{c.a} > {c.b}" for c in pairs if c.significant) or "none of the pairs") + "."
    else:
        head = (f"**The paper's ranking does not reproduce**: observed {' > '.join(order)} "
                "by mean final accuracy" + ("" if any(c.significant for c in pairs)
                                            else ", with no pair significantly different") + ".")
    return [head, *(f"- {c}" for c in pairs)]


def verdict_order(records: list[dict]) -> list[str]:
    pairs = [Contrast(records, "depthwise-first", "pointwise-first"),
             Contrast(records, "depthwise-first + ReLU", "pointwise-first + ReLU")]
    if not any(c.significant for c in pairs):
        head = ("**Consistent with the paper**: no significant difference between the two "
                "orders, with or without an intermediate ReLU.")
    else:
        head = "**Order matters at this scale**: " + "; ".join(
            f"{c.a if c.diff > 0 else c.b} is better" for c in pairs if c.significant) + "."
    return [head, *(f"- {c}" for c in pairs)]


def verdict_spectrum(records: list[dict]) -> list[str]:
    order = _ranking(records)
    best = order[0]
    lines = [f"Best point by mean final accuracy: **{best}**; ranking: {' > '.join(order)}."]
    if best != "depthwise":
        c = Contrast(records, best, "depthwise")
        lines.append(f"- {c}" + ("" if c.significant else " — not significant"))
    c = Contrast(records, "depthwise", order[-1] if order[-1] != "depthwise" else order[-2])
    lines.append(f"- {c}")
    if "1 segment" in order:
        lines.append(f"- {Contrast(records, 'depthwise', '1 segment')}")
    return lines


def verdict_compression(records: list[dict]) -> list[str]:
    ratios = [1, 2, 4, 8]
    gains = [Contrast(records, f"ratio {r}", f"ratio {r}, no residual") for r in ratios]
    from scipy import stats as sps  # lazy: see stats.welch

    rho = sps.spearmanr(ratios, [g.diff for g in gains]).statistic
    growth, p = interaction(*(values(records, v, "final_top1") for v in (
        "ratio 1", "ratio 1, no residual", "ratio 8", "ratio 8, no residual")))
    significant = not math.isnan(p) and p < ALPHA
    if significant and growth > 0:
        head = "**The residual benefit grows with compression**"
    elif significant:
        head = "**The residual benefit shrinks with compression**"
    elif growth > 0:
        head = ("**A trend, not significant at this scale**: the residual benefit is larger at "
                "ratio 8 than at ratio 1, within the seed-to-seed spread")
    else:
        head = "**No growth of the residual benefit with compression**"
    head += f" (Spearman rank correlation of ratio vs benefit over the 4 ratios: {rho:+.2f})."
    p_text = "n/a (one seed)" if math.isnan(p) else f"{p:.3f}"
    return [head, f"- benefit at ratio 8 − benefit at ratio 1 = {100 * growth:+.2f} points "
                  f"(p = {p_text}, t-test with Welch-Satterthwaite degrees of freedom)",
            *(f"- ratio {r}: {g}" for r, g in zip(ratios, gains, strict=True))]


VERDICTS: dict[str, Callable[[list[dict]], list[str]]] = {
    "residual": verdict_residual, "activation": verdict_activation, "order": verdict_order,
    "spectrum": verdict_spectrum, "spectrum-matched": verdict_spectrum,
    "compression": verdict_compression}


def render(exp: Experiment, records: list[dict], rows: list[dict], setup: list[str]) -> str:
    """The whole report as Markdown."""
    lines = [f"# Experiment `{exp.name}`", "", f"**Question.** {exp.question}", "",
             f"**Claim.** {exp.claim}", "", "## Verdict", "", *VERDICTS[exp.name](records), ""]
    if all(r["final_top1"][0] >= 0.99 for r in rows):
        lines += ["Every variant reaches ≥ 99%: at this budget the data cannot separate them; "
                  "use fewer images or steps (`--set data.train_subset=...`).", ""]
    lines += ["Mean ± standard deviation over seeds (sample std, ddof = 1). p-values: Welch's "
              "two-sided t-test on per-seed values; with few seeds only large effects reach "
              "p < 0.05.", "", "## Results", "", to_markdown(rows), "",
              "![curves](curves.png)", "", "![summary](summary.png)", "", "## Setup", "",
              *(f"- {s}" for s in setup), ""]
    return "\n".join(lines)
