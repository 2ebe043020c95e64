"""Experiments: end to end on a tiny budget, variants that really differ, statistics and verdicts."""

import csv
import json
import math

import pytest

from xception.experiments import base_config, get_experiment, run
from xception.experiments.budget import count_parameters
from xception.experiments.definitions import match_parameters, segment_points
from xception.experiments.report import render
from xception.experiments.stats import mean_std, summarize, to_csv, to_markdown, value_at, welch
from xception.models.layers import SpectrumConv
from xception.models.registry import create_model
from xception.models.xception import Shortcut

TINY_RUN = ["train.epochs=2", "data.train_subset=32", "data.image_size=16",
            "model.stem_channels=[8,8]", "model.entry_channels=[8,16,16]",
            "model.middle_channels=16", "model.middle_repeats=1", "model.exit_channels=[16,32]",
            "model.final_channels=[32,32]"]


@pytest.mark.parametrize("name", ["residual", "activation", "spectrum", "order", "compression"])
def test_every_experiment_runs_end_to_end(name, tmp_path):
    out = run(name, seeds=2, overrides=TINY_RUN, out_dir=tmp_path / name, log=lambda s: None)
    files = {p.name for p in out.iterdir()}
    assert {"results.md", "results.csv", "curves.png", "summary.png", "report.md",
            "runs.jsonl"} <= files
    exp = get_experiment(name, "xception_small", base_config(TINY_RUN).model.overrides)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 * len(exp.variants)
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [r["variant"] for r in rows] == [v.name for v in exp.variants]
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "| variant |" in report and "p = " in report
    for png in ("curves.png", "summary.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_finished_runs(tmp_path):
    logs: list[str] = []
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=tmp_path, log=lambda s: None)
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=tmp_path, log=logs.append)
    assert sum("already done" in line for line in logs) == 2
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2


def test_a_signal_stops_the_experiment_and_records_nothing_partial(tmp_path, monkeypatch):
    import dataclasses

    import xception.experiments.runner as runner

    real_fit, calls = runner.fit, []

    def fit_stopped_on_second_run(*args, **kwargs):
        calls.append(1)
        result = real_fit(*args, **kwargs)
        return dataclasses.replace(result, interrupted=len(calls) == 2)

    monkeypatch.setattr(runner, "fit", fit_stopped_on_second_run)
    with pytest.raises(KeyboardInterrupt):
        run("residual", seeds=1, overrides=TINY_RUN, out_dir=tmp_path, log=lambda s: None)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "results.md").exists()
    logs: list[str] = []
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=tmp_path, log=logs.append)
    assert sum("already done" in line for line in logs) == 1
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2


def models_of(name: str, **kw):
    base = base_config(TINY_RUN).model.overrides
    exp = get_experiment(name, "xception_small", base, **kw)
    return {v.name: create_model("xception_small", **{**base, **v.overrides}) for v in exp.variants}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def convs(m):
    return [c for c in m.modules() if isinstance(c, SpectrumConv)]


def test_residual_variants_differ_in_shortcuts():
    m = models_of("residual")
    assert any(isinstance(x, Shortcut) for x in m["residual"].modules())
    assert not any(isinstance(x, Shortcut) for x in m["no residual"].modules())
    assert n_params(m["residual"]) > n_params(m["no residual"])


def test_activation_variants_differ_in_the_module_between_the_ops():
    m = models_of("activation")
    kinds = {name: {type(c.mid_act).__name__ for c in convs(model)} for name, model in m.items()}
    assert kinds == {"none": {"Identity"}, "ELU": {"ELU"}, "ReLU": {"ReLU"}}


def test_order_variants_differ_in_op_order():
    m = models_of("order")
    assert {c.order for c in convs(m["pointwise-first"])} == {"pointwise_first"}
    assert {c.order for c in convs(m["depthwise-first + ReLU"])} == {"depthwise_first"}
    assert {type(c.mid_act).__name__ for c in convs(m["pointwise-first + ReLU"])} == {"ReLU"}


def test_spectrum_points_run_from_one_segment_to_depthwise():
    base = base_config(TINY_RUN).model.overrides
    assert segment_points("xception_small", base) == [1, 2, 4, None]  # widths' gcd is 8
    m = models_of("spectrum")
    groups = {name: {c.spatial.groups for c in convs(model)} for name, model in m.items()}
    assert groups["1 segment"] == {1} and groups["4 segments"] == {4}
    assert groups["depthwise"] == {c.spatial.in_channels for c in convs(m["depthwise"])}
    counts = [n_params(x) for x in m.values()]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts)


def test_parameter_matched_spectrum_is_within_ten_percent():
    base = base_config(TINY_RUN).model.overrides
    target = count_parameters("xception_small", {**base, "segments": None})
    for s in (1, 2):
        n = count_parameters("xception_small", match_parameters("xception_small", base,
                                                                 {"segments": s}, target))
        assert abs(n - target) / target < 0.10
    m = models_of("spectrum", match_params=True)
    assert m["1 segment"].config.middle_channels < m["depthwise"].config.middle_channels


def test_compression_variants_squeeze_the_inner_convs():
    m = models_of("compression")
    block = m["ratio 4"].middle_flow[0]
    assert [c.pointwise.out_channels for c in block.sepconvs] == [4, 4, 16]
    assert [c.pointwise.out_channels for c in m["ratio 1"].middle_flow[0].sepconvs] == [16] * 3
    assert m["ratio 8, no residual"].middle_flow[0].shortcut is None


def test_mean_std_and_loss_at_fractions():
    mean, std = mean_std([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)
    assert mean_std([0.5]) == (0.5, 0.0)
    hist = [{"epoch": e, "val_loss": 10.0 - e} for e in range(1, 9)]
    assert value_at(hist, 0.25) == 8.0 and value_at(hist, 0.5) == 6.0 and value_at(hist, 1.0) == 2.0
    hist = [{"epoch": e, "val_top1": e / 10} for e in range(1, 9)]
    assert value_at(hist, 0.25, "val_top1") == 0.2


def record(variant, seed, final, losses, params=100):
    hist = [{"epoch": i + 1, "train_loss": 1.0, "val_loss": v,
             "val_top1": final - 0.05 * (len(losses) - 1 - i)} for i, v in enumerate(losses)]
    return {"variant": variant, "seed": seed, "final_top1": final, "best_top1": final + 0.01,
            "history": hist, "params": params, "macs": 2_000_000, "img_per_s": 100.0 + seed}


def test_summary_table_from_known_per_seed_numbers():
    recs = [record("a", 0, 0.90, [4, 3, 2, 1]), record("a", 1, 0.94, [6, 5, 4, 3]),
            record("b", 0, 0.50, [8, 8, 8, 8], params=50)]
    rows = summarize(recs)
    assert [r["variant"] for r in rows] == ["a", "b"]
    a = rows[0]
    assert a["final_top1"][0] == pytest.approx(0.92)
    assert a["final_top1"][1] == pytest.approx(math.sqrt(2) * 0.02)
    assert a["val_loss@25%"] == (5.0, pytest.approx(math.sqrt(2)))
    assert a["val_loss@100%"][0] == 2.0 and a["img_per_s"][0] == 100.5
    md = to_markdown(rows)
    assert a["val_top1@25%"][0] == pytest.approx(0.77)  # epoch 1 of 4: final - 0.15
    assert "| a | 2 | 92.00 ± 2.83 | 93.00 ± 2.83 | 77.00 ± 2.83 | 82.00 ± 2.83 | 5.000 ± 1.414 |" in md
    assert "| b | 1 | 50.00 ± 0.00 |" in md
    parsed = list(csv.DictReader(to_csv(rows).splitlines()))
    assert float(parsed[0]["final_top1_mean"]) == pytest.approx(0.92)
    assert parsed[1]["params"] == "50"


def test_welch_matches_a_hand_computed_case():
    diff, p = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    # t = -3 / sqrt(1/3 + 1/3) = -3.674, df = 4 -> two-sided p = 0.02131
    assert diff == -3.0 and p == pytest.approx(0.02131, abs=1e-4)
    assert math.isnan(welch([1.0], [2.0, 3.0])[1])
    assert welch([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)


def verdict(name, recs):
    exp = get_experiment(name, "xception_small", base_config(TINY_RUN).model.overrides)
    return render(exp, recs, summarize(recs), ["test"]).split("## Verdict")[1]


def test_residual_verdict_follows_the_numbers():
    good = [record("residual", s, 0.95 + 0.005 * s, [1, 1, 1, 1]) for s in range(3)]
    bad = [record("no residual", s, 0.70 + 0.005 * s, [3, 2, 2, 2]) for s in range(3)]
    assert "**Reproduces**" in verdict("residual", good + bad)
    same = [record(v, s, 0.9 + 0.01 * s, [1, 1, 1, 1]) for v in ("residual", "no residual")
            for s in range(3)]
    assert "**Inconclusive at this scale**" in verdict("residual", same)
    flipped = [{**r, "variant": "no residual" if r["variant"] == "residual" else "residual"}
               for r in good + bad]
    assert "**Does not reproduce**" in verdict("residual", flipped)


def test_activation_verdict_reads_the_ranking():
    recs = [record(v, s, acc + 0.002 * s, [1] * 4) for v, acc in
            (("none", 0.9), ("ELU", 0.8), ("ReLU", 0.7)) for s in range(3)]
    assert "ranking reproduces" in verdict("activation", recs)
    recs = [record(v, s, acc + 0.002 * s, [1] * 4) for v, acc in
            (("none", 0.7), ("ELU", 0.8), ("ReLU", 0.9)) for s in range(3)]
    assert "does not reproduce**: observed ReLU > ELU > none" in verdict("activation", recs)


def test_compression_verdict_detects_growth():
    recs = []
    for r, gain in ((1, 0.0), (2, 0.05), (4, 0.1), (8, 0.2)):
        for s in range(3):
            recs.append(record(f"ratio {r}", s, 0.8 + gain + 0.002 * s, [1] * 4))
            recs.append(record(f"ratio {r}, no residual", s, 0.8 + 0.002 * s, [1] * 4))
    assert "**The residual benefit grows with compression**" in verdict("compression", recs)
    # the same means with a wide seed-to-seed spread without residuals: a trend, not a finding
    noisy = [dict(r, final_top1=r["final_top1"] + (0.15 * (r["seed"] - 1)
                                                    if "no residual" in r["variant"] else 0))
             for r in recs]
    assert "**A trend, not significant at this scale**" in verdict("compression", noisy)


def test_interaction_matches_a_hand_computed_case():
    from xception.experiments.stats import interaction

    a1, b1, a2, b2 = [1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [5.0, 7.0, 9.0], [1.0, 1.0, 2.0]
    diff, p = interaction(a1, b1, a2, b2)
    assert diff == pytest.approx((7 - 4 / 3) - (2 - 1 / 3))  # 4.0
    # variances 1, 1/3, 4, 1/3 over 3 seeds each: se^2 = 17/9; df = se^4 / sum((v/3)^2 / 2)
    terms = [1 / 3, 1 / 9, 4 / 3, 1 / 9]
    df = (17 / 9) ** 2 / sum(t ** 2 / 2 for t in terms)
    from scipy import stats as sps

    assert p == pytest.approx(2 * sps.t.sf(4.0 / math.sqrt(17 / 9), df))
    assert 0.01 < p < 0.2
    assert math.isnan(interaction([1.0], [0.0], [2.0], [0.0])[1])


def test_experiment_cli_rejects_bad_input(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "xception", "experiment", "residual",
                        "--match-params", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "spectrum experiment only" in r.stderr
    assert not (tmp_path / "x").exists()
