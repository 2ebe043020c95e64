"""Experiments: end to end on a tiny budget, variants that really differ, statistics and verdicts."""

import ast
import csv
import inspect
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import xception.experiments
import xception.workarounds
from xception.errors import ConfigError
from xception.experiments import EXPERIMENTS, NAMES, Experiment, base_config, get_experiment, run
from xception.experiments.budget import (
    MIN_WIDTH,
    count_macs,
    count_parameters,
    match_parameters,
    scale_widths,
    segment_points,
)
from xception.experiments.definitions import MATCHABLE, Variant
from xception.experiments.report import render
from xception.experiments.runner import reused_record, run_record, variant_config
from xception.experiments.stats import summarize, to_csv, to_markdown
from xception.experiments.verdicts import evaluate, headline
from xception.models.layers import SpectrumConv
from xception.models.registry import create_model
from xception.models.xception import Shortcut

# the headline: a word, the size condition, and for inconclusive the CI and the design's power
VERDICT = re.compile(r"(supports|contradicts) at (equal|matched|unmatched) size|inconclusive at "
                     r"(equal|matched|unmatched) size.*: .*95% CI \[.+\].*; this design had 80% power "
                     r"to detect [\d.]+ points.*, not a bound on the effect$")

TINY_RUN = ["data.name=digits", "train.epochs=2", "data.train_subset=32", "data.image_size=16",
            "model.stem_channels=[8,8]", "model.entry_channels=[8,16,16]",
            "model.middle_channels=16", "model.middle_repeats=1", "model.exit_channels=[16,32]",
            "model.final_channels=[32,32]"]


@pytest.mark.parametrize("name", ["residual", "activation", "spectrum", "order", "compression"])
def test_every_experiment_runs_end_to_end(name, tmp_path):
    out = run(name, seeds=2, overrides=TINY_RUN, out_dir=tmp_path / name, log=lambda s: None)
    files = {p.name for p in out.iterdir()}
    extra = {"spectrum": {"cost.png"}, "compression": {"benefit.png"}}.get(name, set())
    assert {"results.md", "results.csv", "curves.png", "summary.png", "effects.png", "report.md",
            "runs.jsonl", *extra} <= files
    exp = get_experiment(name, "xception_small", base_config(TINY_RUN).model.overrides)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 * len(exp.variants)
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [r["variant"] for r in rows] == [v.name for v in exp.variants]
    report = (out / "report.md").read_text()
    assert report.index("## Declared") < report.index("## Verdict") < report.index("## Results")
    assert "95% CI" in report and "## Confounds" in report and "| variant |" in report
    assert VERDICT.match(report.split("## Verdict")[1].split("**")[1])
    for png in ("curves.png", "summary.png", "effects.png", *extra):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_finished_runs(tmp_path):
    out, logs = tmp_path / "residual", []  # a folder of its own: other tests' runs are not beside it
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None)
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=logs.append)
    assert sum("already done" in line for line in logs) == 2
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


def test_neighbouring_experiments_share_runs_of_the_same_network_budget_and_seed(tmp_path):
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=tmp_path / "residual", log=lambda s: None)
    logs: list[str] = []
    run("activation", seeds=1, overrides=TINY_RUN, out_dir=tmp_path / "activation",
        log=logs.append)
    source = {r["variant"]: r for r in map(json.loads, (tmp_path / "residual" / "runs.jsonl")
                                            .read_text().splitlines())}
    runs = {r["variant"]: r for r in map(json.loads, (tmp_path / "activation" / "runs.jsonl")
                                          .read_text().splitlines())}
    # "none" is the default network, as residual's "residual" is: copied, not trained again
    assert sum("reused" in line for line in logs) == 1
    assert runs["none"]["reused_from"] == {"folder": "residual", "variant": "residual",
                                           "key": source["residual"]["key"]}
    assert runs["none"]["history"] == source["residual"]["history"]
    assert runs["none"]["key"] != source["residual"]["key"]  # keyed as this experiment's run
    assert "reused_from" not in runs["ELU"] and "reused_from" not in runs["ReLU"]
    report = (tmp_path / "activation" / "report.md").read_text()
    assert "shared runs: 1 of 3" in report
    own = sum(runs[v]["seconds"] for v in ("ELU", "ReLU"))
    assert f"; {own:.0f} s in the runs trained for this experiment" in report
    # a different budget (here one more epoch) or reuse=False: trained here
    for name, kw, sets in (("longer", {}, ["train.epochs=3"]), ("fresh", {"reuse": False}, [])):
        logs.clear()
        run("activation", seeds=1, overrides=TINY_RUN + sets, out_dir=tmp_path / name,
            log=logs.append, **kw)
        assert not any("reused" in line for line in logs), name


def test_a_signal_stops_the_experiment_and_records_nothing_partial(tmp_path, monkeypatch):
    import dataclasses

    import xception.experiments.resumable as resumable

    real_fit, calls = resumable.fit, []

    def fit_stopped_on_second_run(*args, **kwargs):
        calls.append(1)
        result = real_fit(*args, **kwargs)
        return dataclasses.replace(result, interrupted=len(calls) == 2)

    monkeypatch.setattr(resumable, "fit", fit_stopped_on_second_run)
    out = tmp_path / "residual"  # its own folder: the runs of other tests' folders are not beside it
    with pytest.raises(KeyboardInterrupt):
        run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=lambda s: None)
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1
    assert not (out / "results.md").exists()
    logs: list[str] = []
    run("residual", seeds=1, overrides=TINY_RUN, out_dir=out, log=logs.append)
    assert sum("already done" in line for line in logs) == 1
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


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


def record(variant, seed, final, losses=(1.0, 1.0), params=100, accs=None):
    accs = accs or [final] * len(losses)
    hist = [{"epoch": i + 1, "train_loss": t, "val_loss": 1.0, "val_top1": a}
            for i, (t, a) in enumerate(zip(losses, accs, strict=True))]
    return {"variant": variant, "seed": seed, "final_top1": final, "best_top1": max(accs),
            "history": hist, "params": params, "macs": 2_000_000, "img_per_s": 100.0 + seed}


def test_summary_table_from_known_per_seed_numbers():
    recs = [record("a", 0, 0.90, [0.5, 0.3], accs=[0.80, 0.90]),
            record("a", 1, 0.94, [0.4, 0.1], accs=[0.84, 0.94]),
            record("b", 0, 0.50, [2.0, 2.0], params=50)]
    rows = summarize(recs)
    assert [r["variant"] for r in rows] == ["a", "b"]
    a = rows[0]
    half = 12.706205 * 0.02 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert a["final_top1"] == pytest.approx((0.92, 0.92 - half, 0.92 + half), rel=1e-6)
    assert a["auc"][0] == pytest.approx((0.85 + 0.89) / 2)
    assert a["train_loss"][0] == pytest.approx(0.2)
    assert a["train_loss_change"][0] == pytest.approx(-0.25)  # -0.2 and -0.3
    assert a["img_per_s"][0] == 100.5
    md = to_markdown(rows)
    assert f"| a | 2 | 92.00 [{100 * (0.92 - half):.2f}, {100 * (0.92 + half):.2f}] |" in md
    assert "| b | 1 | 50.00 | 50.00 | 2.0000 | 0.0000 |" in md
    parsed = list(csv.DictReader(to_csv(rows).splitlines()))
    assert float(parsed[0]["final_top1_mean"]) == pytest.approx(0.92)
    assert float(parsed[0]["final_top1_ci_high"]) == pytest.approx(0.92 + half)
    assert parsed[1]["params"] == "50"


def test_convergence_columns():
    from xception.experiments.stats import last_change, tail_share

    hist = [{"train_loss": v} for v in (2.0, 1.0, 0.6, 0.5)]
    assert last_change(hist) == pytest.approx(-0.1)
    assert tail_share(hist) == pytest.approx(0.1 / 1.5)  # the last epoch's part of the fall
    assert tail_share(hist[:2]) == 0.0 and tail_share([{"train_loss": 1.0}] * 3) == 0.0


def _exp(name, **kw):
    return get_experiment(name, "xception_small", base_config(TINY_RUN).model.overrides, **kw)


NOISE = [0.003, -0.002, 0.001, -0.003, 0.002]


def test_residual_verdicts_follow_the_numbers():
    exp = _exp("residual")
    good = [record("residual", s, 0.90 + 0.02 * s) for s in range(5)]
    worse = [record("no residual", s, 0.88 + 0.02 * s + NOISE[s]) for s in range(5)]
    assert headline(evaluate(exp, good + worse)) == "supports at equal size"
    flipped = [{**r, "variant": "no residual" if r["variant"] == "residual" else "residual"}
               for r in good + worse]
    assert headline(evaluate(exp, flipped)) == "contradicts at equal size"
    # a 0.2-point gain under 1-point noise: inconclusive, with its CI and the design's power
    noisy = [record("no residual", s, 0.898 + 0.02 * s + 3 * NOISE[s]) for s in range(5)]
    out = evaluate(exp, good + noisy)
    word, effect = headline(out), out[0].effect
    assert word == (f"inconclusive at equal size: 95% CI [{effect.low:+.2f}, {effect.high:+.2f}] "
                    f"points; this design had 80% power to detect {out[0].detectable:.2f} points, "
                    "not a bound on the effect")
    assert effect.low < 0 < effect.high and out[0].detectable > abs(effect.diff)


def test_tests_are_paired_by_seed():
    """Seed effects shared by both variants cancel; missing seeds are left out of the pairs."""
    exp = _exp("residual")
    seed_effect = [0.0, 0.10, -0.05, 0.07, 0.02]
    recs = [record("residual", s, 0.80 + seed_effect[s] + 0.01 + NOISE[s] / 3) for s in range(5)]
    recs += [record("no residual", s, 0.80 + seed_effect[s]) for s in range(4)]
    primary = evaluate(exp, recs)[0]
    assert primary.effect.n == 4 and primary.word == "supports"
    assert primary.effect.diff == pytest.approx(1.0 + 100 * sum(NOISE[:4]) / 3 / 4)


def test_holm_decides_the_activation_verdict():
    exp = _exp("activation")
    base = [0.90 + 0.01 * s for s in range(5)]
    recs = [record("none", s, base[s] + 0.01 + NOISE[s]) for s in range(5)]
    recs += [record("ELU", s, base[s] + 0.005) for s in range(5)]
    recs += [record("ReLU", s, base[s]) for s in range(5)]
    out = evaluate(exp, recs)
    assert [o.test.label for o in out] == ["none > ELU", "ELU > ReLU", "none > ReLU"]
    # Holm: the smallest p times 3, then times 2, ... and never below an earlier one
    ps = [o.effect.p for o in out]
    order = sorted(range(3), key=lambda i: ps[i])
    assert out[order[0]].p_adj == pytest.approx(min(1, 3 * ps[order[0]]))
    assert all(o.p_adj >= o.effect.p for o in out)
    assert out[1].word == "supports"  # ELU - ReLU = 0.5 points, no noise at all
    assert headline(out).split()[0] in ("supports", out[0].word)


def test_order_claims_equivalence_only_with_an_equivalence_test():
    exp = _exp("order")
    names = ["depthwise-first", "depthwise-first + ReLU", "pointwise-first",
             "pointwise-first + ReLU"]
    tight = [record(v, s, 0.9 + 0.01 * s + NOISE[s] / 10 * (i % 2)) for i, v in enumerate(names)
             for s in range(5)]
    assert headline(evaluate(exp, tight)) == "supports at equal size"  # |diff| << 0.5, tight CI
    apart = [record(v, s, 0.9 + 0.01 * s + (0.02 if v.startswith("point") else 0) + NOISE[s] / 5)
             for v in names for s in range(5)]
    assert headline(evaluate(exp, apart)) == "contradicts at equal size"  # 2 points apart
    loose = [record(v, s, 0.9 + 0.01 * s + (4 * NOISE[s] if v.startswith("point") else 0))
             for v in names for s in range(5)]
    assert headline(evaluate(exp, loose)).startswith("inconclusive")  # no difference shown,
    # but the noise is too large to show equivalence within 0.5 points either


def compression_records(gains, spread=0.0):
    recs = []
    for r, gain in zip((1, 2, 4, 8), gains, strict=True):
        for s in range(5):
            recs.append(record(f"ratio {r}", s, 0.8 + gain + 0.01 * s))
            recs.append(record(f"ratio {r}, no residual", s, 0.8 + 0.01 * s + spread * NOISE[s]
                               * (1 + r)))
    return recs


def test_compression_trend_of_the_residual_benefit():
    exp = _exp("compression")
    out = evaluate(exp, compression_records((0.0, 0.01, 0.02, 0.03), spread=0.2))
    trend = out[0]
    assert trend.test.is_trend and trend.test.primary
    assert trend.effect.diff == pytest.approx(1.0, abs=0.05)  # +1 point per doubling
    assert trend.word == "supports"
    assert headline(evaluate(exp, compression_records((0.03, 0.02, 0.01, 0.0)))).startswith(
        "contradicts at equal size")
    flat = evaluate(exp, compression_records((0.01,) * 4, spread=3.0))
    assert headline(flat).startswith("inconclusive")
    assert [o.test.primary for o in flat] == [True, False, False, False, False]


def test_report_declares_before_the_numbers():
    exp = _exp("residual")
    recs = [record(v, s, 0.9 + 0.01 * s + (0.01 if v == "residual" else 0) + NOISE[s] / 4)
            for v in ("residual", "no residual") for s in range(5)]
    text = render(exp, recs, summarize(recs), evaluate(exp, recs), ["setup line"], ["curves"])
    declared = text.split("## Declared before the runs")[1].split("## Verdict")[0]
    assert "Primary metric: final validation top-1" in declared and "Holm" in declared
    assert "residual − no residual: claimed > 0" in declared
    assert "%" not in declared.split("Primary metric")[0]  # no numbers before the verdict
    verdict = text.split("## Verdict")[1].split("## Confounds")[0]
    assert "**supports at equal size**" in verdict and "Omnibus" in verdict and "[+" in verdict
    assert "shortcut convolutions" in text.split("## Confounds")[1]


def test_parameter_matched_compression_is_within_ten_percent():
    base = base_config(TINY_RUN).model.overrides
    exp = _exp("compression", match_params=True)
    assert exp.name == "compression-matched" and "about the parameters" in exp.confounds
    target = count_parameters("xception_small", {**base, "bottleneck_ratio": 1})
    for v in exp.variants:
        if v.overrides.get("residual", True):
            n = count_parameters("xception_small", {**base, **v.overrides})
            assert abs(n - target) / target < 0.10, v.name


def test_experiment_cli_rejects_bad_input(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "xception", "experiment", "residual",
                        "--match-params", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "spectrum and compression experiments" in r.stderr
    assert not (tmp_path / "x").exists()


def test_fashion_mnist_experiment_from_the_command_line(tmp_path, monkeypatch):
    """The issue's command on tiny idx files the test writes: tables, plots, a report with 95%
    CIs and a verdict word; the Fashion-MNIST budget (28 px, BatchNorm recalibration) applies."""
    from idx_helpers import write_set

    import xception.data.idx as idx
    from xception.cli.main import main

    monkeypatch.setattr(idx, "SYSTEM_DIRS", {k: [tmp_path / "absent"] for k in idx.SYSTEM_DIRS})
    write_set(tmp_path / "fm", n_train=40, n_val=20)
    out = tmp_path / "out"
    model = [a for s in TINY_RUN[1:] if s.startswith("model.") for a in ("--set", s)]
    assert main(["experiment", "residual", "--data", "fashion-mnist", "--seeds", "2",
                 "--steps", "12", "--out", str(out), "--set", f"data.root={tmp_path / 'fm'}",
                 *model]) == 0
    assert {"results.md", "results.csv", "curves.png", "summary.png", "effects.png",
            "report.md"} <= {p.name for p in out.iterdir()}
    report = (out / "report.md").read_text()
    assert "95% CI" in report and "data: fashion-mnist, 28 px" in report
    assert VERDICT.match(report.split("## Verdict")[1].split("**")[1])
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 4 and all(r["history"][-1]["epoch"] == 12 for r in runs)


def defined_names(module) -> list[str]:
    """The functions and classes a module's source defines at any depth."""
    tree = ast.parse(Path(module.__file__).read_text())
    return [node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]


def test_the_package_only_re_exports():
    assert defined_names(xception.experiments) == []
    for name in xception.experiments.__all__:
        assert getattr(xception.experiments, name) is not None


def test_the_workarounds_sit_at_the_bottom_of_the_import_graph():
    tree = ast.parse(Path(xception.workarounds.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.level > 0 or (node.module or "").startswith("xception"))]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names if alias.name.startswith("xception")]
    assert imported == []
    assert MIN_WIDTH == xception.workarounds.ONEDNN_MIN_CONV_CHANNELS


def test_scaled_widths_never_go_below_the_onednn_minimum():
    base = base_config(TINY_RUN).model.overrides
    narrow = scale_widths(base, "xception_small", 0.01, 4)
    widths = [*narrow["stem_channels"], *narrow["entry_channels"], narrow["middle_channels"],
              *narrow["exit_channels"], *narrow["final_channels"]]
    assert min(widths) == MIN_WIDTH


def test_every_registry_builder_takes_the_one_signature(monkeypatch):
    from xception.experiments import transfer

    monkeypatch.setattr(transfer, "PRETRAIN_EPOCHS", 1)  # its budgets: chosen by its pilot
    monkeypatch.setattr(transfer, "EPOCHS", {10: 2, 100: 2, 0: 2})
    assert NAMES == ("residual", "activation", "spectrum", "order", "compression", "versus",
                     "transfer")
    assert tuple(EXPERIMENTS) == NAMES
    assert MATCHABLE.issubset(EXPERIMENTS)
    base = base_config(TINY_RUN).model.overrides
    for name, builder in EXPERIMENTS.items():
        assert list(inspect.signature(builder).parameters) == ["model", "base", "match_params"]
        for match_params in (False, True) if name in MATCHABLE else (False,):
            experiment = builder("xception_small", base, match_params)
            assert isinstance(experiment, Experiment)
            assert experiment.name == name + ("-matched" if match_params else "")
            assert experiment == get_experiment(name, "xception_small", base, match_params)


def test_the_lookup_refuses_unknown_names_and_unmatchable_experiments():
    base = base_config(TINY_RUN).model.overrides
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; choose one of residual, "
                       "activation, spectrum, order, compression, versus, transfer"):
        get_experiment("nope", "xception_small", base)
    for name in set(NAMES) - MATCHABLE:
        with pytest.raises(ConfigError, match="^--match-params applies to the spectrum and "
                           "compression experiments$"):
            get_experiment(name, "xception_small", base, match_params=True)


def test_a_run_record_holds_what_the_run_saw():
    base = base_config(TINY_RUN)
    experiment = get_experiment("residual", base.model.name, base.model.overrides)
    variant = Variant("residual", {"residual": True})
    cfg = variant_config(base, variant.overrides, 3)
    net = create_model(cfg.model.name, **cfg.model.overrides)
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0, "val_top1": top1,
                "train_img_per_s": speed, "lr": 0.1}
               for e, top1, speed in ((1, 0.5, 10.0), (2, 0.7, 100.0), (3, 0.6, 200.0))]
    result = SimpleNamespace(model=net, history=history,
                             info=SimpleNamespace(preprocess=SimpleNamespace(in_chans=3)))
    record = run_record(experiment, variant, 3, "k", cfg, result, 12.5)
    assert list(record) == ["key", "experiment", "variant", "seed", "overrides", "settings", "config",
                            "environment", "params", "macs", "history", "final_top1", "best_top1",
                            "test_top1", "img_per_s", "seconds"]
    assert record["test_top1"] is None  # no held-out validation split: no test evaluation
    assert record["config"] == cfg.to_dict()  # data, split, budget, model: the record stands alone
    assert (record["key"], record["experiment"], record["variant"], record["seed"]) == \
        ("k", "residual", "residual", 3)
    assert record["overrides"] == cfg.model.overrides
    assert record["params"] == count_parameters(cfg.model.name, cfg.model.overrides)
    assert record["macs"] == count_macs(net, cfg.data.image_size, 3)
    assert record["history"] == [{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_top1")}
                                 for h in history]
    assert (record["final_top1"], record["best_top1"]) == (0.6, 0.7)
    assert record["img_per_s"] == 150.0  # epoch 1 (start-up costs) left out
    assert record["seconds"] == 12.5
    # the same run copied into another experiment: its numbers and origin, this experiment's key
    origin = {"folder": "residual", "variant": "residual", "key": "k"}
    other = get_experiment("activation", base.model.name, base.model.overrides)
    none = Variant("none", {"mid_activation": None})
    none_cfg = variant_config(base, none.overrides, 3)
    copied = reused_record({**record, "reused_from": origin}, "k2", other, none, none_cfg)
    assert copied == {**record, "key": "k2", "experiment": "activation", "variant": "none",
                      "overrides": none_cfg.model.overrides, "settings": {},
                      "reused_from": origin}
    assert copied["overrides"] != record["overrides"]
