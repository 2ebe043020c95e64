"""The verdict rule (read off the 95% CI, gated by Holm), the size condition each verdict carries,
the post-hoc power wording and the relative (error-ratio) scale, on constructed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xception.experiments import base_config, get_experiment
from xception.experiments.definitions import Test as Comparison
from xception.experiments.report import declared, outcome_table, relative_scale, render
from xception.experiments.significance import Paired, mean_ci, slopes
from xception.experiments.stats import summarize
from xception.experiments.verdicts import _word, evaluate, headline, size_condition

TINY = ["data.name=digits", "model.stem_channels=[8,8]", "model.entry_channels=[8,16,16]",
        "model.middle_channels=16", "model.middle_repeats=1", "model.exit_channels=[16,32]",
        "model.final_channels=[32,32]"]
GREATER, EQUAL = Comparison("g", "a", "b"), Comparison("e", "a", "b", claim="equal")
NOISE = [0.003, -0.002, 0.001, -0.003, 0.002]


def _exp(name, **kw):
    return get_experiment(name, "xception_small", base_config(TINY).model.overrides, **kw)


def record(variant, seed, final, params=100):
    return {"variant": variant, "seed": seed, "final_top1": final, "best_top1": final,
            "history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_top1": final}],
            "params": params, "macs": 1000, "img_per_s": 1.0}


def ci(low, high, p=0.01):
    return Paired((low + high) / 2, low, high, p, 1.0, 5)


@pytest.mark.parametrize(("test", "effect", "p_adj", "tost", "word"), [
    (GREATER, ci(0.2, 2.0), 0.01, math.nan, "supports"),      # the whole CI above 0
    (GREATER, ci(-2.0, -0.2), 0.01, math.nan, "contradicts"),  # the whole CI below 0
    (GREATER, ci(0.2, 2.0), 0.06, math.nan, "inconclusive"),  # CI above 0, but not after Holm
    (GREATER, ci(-0.1, 2.0), 0.20, math.nan, "inconclusive"),  # CI across 0
    (EQUAL, ci(-0.2, 0.3), 1.0, 0.01, "supports"),            # inside ±0.5 and TOST (Holm) < α
    (EQUAL, ci(-0.2, 0.6), 1.0, 0.03, "inconclusive"),        # TOST < α, but the CI reaches out
    (EQUAL, ci(-0.2, 0.3), 1.0, 0.08, "inconclusive"),        # inside, but TOST not after Holm
    (EQUAL, ci(0.85, 3.11), 0.017, 1.0, "contradicts"),       # order's: the whole CI above +0.5
    (EQUAL, ci(-1.5, -0.5), 0.01, 1.0, "contradicts"),        # the whole CI at or below -0.5
    (EQUAL, ci(0.3, 1.5), 0.01, 1.0, "inconclusive"),         # mean 0.9 beyond the margin, CI not
    (EQUAL, ci(0.6, 1.4), 0.20, 1.0, "inconclusive"),         # outside, but not after Holm
])
def test_the_word_is_read_off_the_95_ci_and_gated_by_holm(test, effect, p_adj, tost, word):
    assert _word(test, effect, p_adj, tost, 0.5) == word


def test_an_equal_claim_is_not_contradicted_by_its_point_estimate():
    """Pointwise-first 0.9 points better on average, significant, but the CI [+0.31, +1.49]
    reaches into the ±0.5 margin: inconclusive (the old rule said contradicts)."""
    exp = _exp("order")
    gap = [0.003, 0.015, 0.006, 0.012, 0.009]  # mean 0.9 points
    records = [record(variant, s, 0.85 + 0.01 * s + (gap[s] if variant == "pointwise-first" else 0))
               for variant in ("depthwise-first", "pointwise-first", "depthwise-first + ReLU",
                               "pointwise-first + ReLU") for s in range(5)]
    first = evaluate(exp, records)[0]
    assert first.effect.diff == pytest.approx(-0.9)
    assert first.p_adj < 0.05 and -1.5 < first.effect.low < -1.4 and -0.5 < first.effect.high < -0.3
    assert first.word == "inconclusive"


@pytest.mark.parametrize(("counts", "text"), [
    ([100, 100], "at equal size"),
    ([187962, 204146, 191634], "at matched size (within 8.6%)"),
    ([187962, 189042], "at matched size (within 0.6%)"),
    ([187962, 1483026, 826098], "at unmatched size (188k–1.48M parameters, 7.9x)"),
    ([57644, 69004], "at unmatched size (57.6k–69.0k parameters, 20% apart)"),
])
def test_size_condition_from_parameter_counts(counts, text):
    assert size_condition(counts) == text


def test_the_size_condition_comes_from_the_records_not_the_name():
    exp = _exp("residual")
    for params, size in ((100, "at equal size"), (800, "at unmatched size (100–800 parameters, 8.0x)")):
        records = [record("residual", s, 0.9 + 0.01 * s + 0.01, params) for s in range(5)]
        records += [record("no residual", s, 0.9 + 0.01 * s + NOISE[s] / 4) for s in range(5)]
        outcomes = evaluate(exp, records)
        assert headline(outcomes) == f"supports {size}"
        assert all(line.endswith(f" | supports {size} |") for line in outcome_table(outcomes)[2:])
        text = render(exp, records, summarize(records), outcomes, ["setup"], [])
        assert f"**supports {size}**" in text


def test_the_headline_takes_the_size_over_every_primary_comparison():
    exp = _exp("spectrum")  # 1, 2, 4 segments and depthwise on this budget
    names = [v.name for v in exp.variants]
    params = dict(zip(names, (800, 400, 130, 110), strict=True))
    records = [record(v, s, 0.9 - 0.002 * i + 0.01 * s + NOISE[s] / 10, params[v])
               for i, v in enumerate(names) for s in range(5)]
    outcomes = evaluate(exp, records)
    assert headline(outcomes) == "contradicts at unmatched size (110–800 parameters, 7.3x)"
    assert outcomes[-1].verdict == "contradicts at unmatched size (110–130 parameters, 18% apart)"
    # several primary tests: the headline's size spans all of them, not the first one's
    exp = _exp("activation")
    params = {"none": 100, "ELU": 100, "ReLU": 300}
    records = [record(v, s, 0.9 - 0.01 * i + 0.01 * s + NOISE[s] / 10, params[v])
               for i, v in enumerate(params) for s in range(5)]
    outcomes = evaluate(exp, records)
    assert outcomes[0].verdict == "supports at equal size"  # none − ELU
    assert headline(outcomes) == "supports at unmatched size (100–300 parameters, 3.0x)"


def test_inconclusive_gives_the_ci_and_the_power_of_the_design_not_a_bound():
    exp = _exp("activation")
    records = [record(v, s, 0.9 + 0.01 * s + 3 * NOISE[(s + i) % 5]) for i, v in
               enumerate(("none", "ELU", "ReLU")) for s in range(5)]
    outcomes = evaluate(exp, records)
    assert all(o.word == "inconclusive" for o in outcomes)
    worst = max(outcomes, key=lambda o: o.detectable)
    assert headline(outcomes) == (
        f"inconclusive at equal size: {worst.test.label}, 95% CI [{worst.effect.low:+.2f}, "
        f"{worst.effect.high:+.2f}] points; this design had 80% power to detect "
        f"{worst.detectable:.2f} points, not a bound on the effect")
    head = outcome_table(outcomes)[0].split(" | ")
    assert head[head.index("95% CI") + 1] == "80% power to detect (not a bound)"
    method = "\n".join(declared(exp))
    assert "read off the test's 95% CI" in method and "not a bound on the effect" in method
    assert "could detect" not in method and "ruled out" not in method


def _compression(gains):
    records = []
    for ratio, gain in zip((1, 2, 4, 8), gains, strict=True):
        for s in range(5):
            records.append(record(f"ratio {ratio}", s, 0.8 + gain + 0.01 * s + NOISE[s] * ratio))
            records.append(record(f"ratio {ratio}, no residual", s, 0.8 + 0.01 * s))
    return records


def test_compression_on_a_relative_scale_is_a_descriptive_table():
    exp = _exp("compression")
    records = _compression((0.02, 0.03, 0.04, 0.05))
    lines = relative_scale(exp, records)
    assert "not a declared test, in no Holm family and not in the verdict" in lines[0]
    final = {(r["variant"], r["seed"]): r["final_top1"] for r in records}
    logs = [[math.log((1 - final[(f"ratio {ratio}", s)]) / (1 - final[(f"ratio {ratio}, no residual",
                                                                          s)]))
             for s in range(5)] for ratio in (1, 2, 4, 8)]
    for ratio, row in zip((1, 2, 4, 8), logs, strict=True):
        mean, low, high = (math.exp(v) for v in mean_ci(row))
        cell = next(line for line in lines if line.startswith(f"| ratio {ratio} | ratio {ratio}, "))
        assert cell.endswith(f"| {mean:.3f} [{low:.3f}, {high:.3f}] |")
    slope, low, high = (math.exp(v) for v in mean_ci(slopes(np.array(logs).T.tolist(),
                                                            [0, 1, 2, 3])))
    trend = next(line for line in lines if line.startswith("| trend"))
    assert trend.endswith(f"| ×{slope:.3f} per step [{low:.3f}, {high:.3f}] |")
    assert slope < 1  # the error ratio falls as the benefit grows
    text = render(exp, records, summarize(records), evaluate(exp, records), ["setup"], [])
    assert "### Relative scale" in text.split("## Verdict")[1].split("## Confounds")[0]
    residual = _exp("residual")
    assert relative_scale(residual, [record(v, s, 0.9) for v in ("residual", "no residual")
                                     for s in range(2)]) == []
