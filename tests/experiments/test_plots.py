"""Experiment plots: each writes a PNG, and draws what it claims (every seed, apart from the mean;
95% CIs equal to ``mean_ci``; axes zoomed to the data; what is subtracted from what; margins;
trends apart from differences; a line per seed across levels). The figure is captured just
before it is saved, on fake records."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from xception.experiments import plots
from xception.experiments.plots import Effect
from xception.experiments.significance import mean_ci

PNG = b"\x89PNG\r\n\x1a\n"
T975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
FINAL = {"a": [0.80, 0.82, 0.84], "b": [0.60, 0.70, 0.65]}  # variant -> per-seed final top-1


def _record(variant: str, seed: int, final: float, epochs: int = 4) -> dict:
    history = [{"epoch": e, "train_loss": 2.0 / e + 0.1 * seed, "val_loss": 1.5 / e,
                "val_top1": final * e / epochs - 0.01 * seed * (e < epochs)}
               for e in range(1, epochs + 1)]
    params = {"a": 1_500_000, "b": 250_000}[variant]
    return {"variant": variant, "seed": seed, "params": params, "macs": 40 * params,
            "final_top1": final, "history": history}


RECORDS = [_record(v, s, FINAL[v][s]) for s in range(3) for v in FINAL]  # seeds interleaved
EFFECTS = [Effect("a - b", [20.0, 12.0, 19.0], 17.0, 7.1, 26.9, "supports"),
           Effect("c - b", [-1.0, 0.5, 0.2], -0.1, -2.0, 1.8, "inconclusive")]


@pytest.fixture
def drawn(monkeypatch):
    """The figures handed to ``_save`` (which still writes them), in call order."""
    figs = []
    real = plots._save

    def capture(fig, path):
        figs.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return figs


def _points(ax) -> np.ndarray:
    """The (x, y) of every scatter point on ``ax`` (seed points; error-bar markers are lines)."""
    offs = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    return np.concatenate(offs) if offs else np.zeros((0, 2))


def _assert_zoomed(limits, values, pad=0.15):
    """The axis shows every value, and not much more: within ``pad`` of their range each side."""
    low, high = limits
    values = np.asarray(values, dtype=float)
    span = values.max() - values.min()
    assert low <= values.min() and values.max() <= high
    assert low >= values.min() - pad * span - 0.25 and high <= values.max() + pad * span + 0.25


def _mean_x(container) -> float:
    return float(container.lines[0].get_xdata()[0])


def _bar(container) -> tuple[float, float]:
    """(low, high) of a one-point error bar: the two ends of its bar segment."""
    (seg,) = container.lines[2][0].get_segments()
    return tuple(sorted(seg[:, 1] if seg[0, 0] == seg[1, 0] else seg[:, 0]))


CALLS = {
    "curves": lambda p: plots.plot_curves(RECORDS, p, "t"),
    "summary": lambda p: plots.plot_summary(RECORDS, p, "t"),
    "effects": lambda p: plots.plot_effects(EFFECTS, p, "t"),
    "cost": lambda p: plots.plot_cost(RECORDS, p, "t"),
    "benefit": lambda p: plots.plot_benefit([1, 2, 4, 8], [[3, 4, 5], [2, 3, 2], [1, 0, 2], [0, -1, 1]],
                                            p, "t"),
}


@pytest.mark.parametrize("name", CALLS)
def test_every_plot_writes_a_png(name, tmp_path):
    out = CALLS[name](tmp_path / "sub" / f"{name}.png")
    assert out == tmp_path / "sub" / f"{name}.png"
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_mean_ci_is_the_t_interval_the_plots_draw():
    m, lo, hi = mean_ci([80.0, 82.0, 84.0])
    half = T975_DF2 * 2.0 / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((82.0, 82.0 - half, 82.0 + half))


def test_summary_draws_every_seed_and_the_ci_of_the_mean(drawn, tmp_path):
    plots.plot_summary(RECORDS, tmp_path / "s.png", "t")
    (ax,) = drawn[0].axes
    pts = _points(ax)
    assert len(pts) == 6  # one point per seed per variant
    for i, values in enumerate(FINAL.values()):
        near = pts[np.abs(pts[:, 0] - i) < 0.5]
        assert sorted(near[:, 1]) == pytest.approx(sorted(100 * v for v in values))
        assert len(set(near[:, 0])) == 3  # jittered: seeds do not hide each other
        _, lo, hi = mean_ci([100 * v for v in values])
        assert _bar(ax.containers[i]) == pytest.approx((lo, hi))
    a_lo, a_hi = _bar(ax.containers[0])
    half = T975_DF2 * 2.0 / math.sqrt(3)
    assert (a_lo, a_hi) == pytest.approx((82 - half, 82 + half))  # by hand, not via mean_ci
    cis = [end for c in ax.containers for end in _bar(c)]
    _assert_zoomed(ax.get_ylim(), [*pts[:, 1], *cis])  # zoomed to seeds and intervals, not 0-100
    for i, c in enumerate(ax.containers):  # no seed behind its mean's marker
        seeds_x = pts[np.abs(pts[:, 0] - i) < 0.5][:, 0]
        assert np.abs(seeds_x - _mean_x(c)).min() > 0.15
    assert "not differences" in ax.get_title()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["a\n1.50M params", "b\n0.25M params"]


def test_summary_plots_another_metric(drawn, tmp_path):
    records = [{**r, "best_top1": 0.5} for r in RECORDS]
    plots.plot_summary(records, tmp_path / "s.png", "t", metric="best_top1", label="best (%)")
    (ax,) = drawn[0].axes
    assert set(_points(ax)[:, 1]) == {50.0} and ax.get_ylabel() == "best (%)"


def test_curves_draw_seeds_means_and_ci_bands(drawn, tmp_path):
    plots.plot_curves(RECORDS, tmp_path / "c.png", "exp")
    loss_ax, acc_ax = drawn[0].axes
    assert loss_ax.get_yscale() == "log"
    seed_values = np.concatenate([line.get_ydata() for line in acc_ax.lines])
    bands = np.concatenate([c.get_paths()[0].vertices[:, 1] for c in acc_ax.collections
                            if isinstance(c, PolyCollection)])
    _assert_zoomed(acc_ax.get_ylim(), [*seed_values, *bands])
    assert "mean, 95% CI band, thin lines: seeds" in drawn[0]._suptitle.get_text()
    assert "not differences" in drawn[0]._suptitle.get_text()
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["a", "b"]
    for ax in (loss_ax, acc_ax):
        assert len(ax.lines) == 2 * (3 + 1)  # per variant: 3 seed lines and the mean line
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    # the band of variant a's val top-1 at the last epoch is mean_ci of the seeds' values there
    band = [c for c in acc_ax.collections if isinstance(c, PolyCollection)][0]
    verts = band.get_paths()[0].vertices
    at_last = verts[np.isclose(verts[:, 0], 4)][:, 1]
    _, lo, hi = mean_ci([100 * v for v in FINAL["a"]])
    assert min(at_last) == pytest.approx(lo) and max(at_last) == pytest.approx(hi)
    mean_line = acc_ax.lines[3]
    assert mean_line.get_linewidth() > acc_ax.lines[0].get_linewidth()
    assert mean_line.get_ydata()[-1] == pytest.approx(82.0)


def test_loss_band_stays_positive_on_the_log_axis(drawn, tmp_path):
    records = [_record("a", s, 0.8) for s in range(2)]
    for r, loss in zip(records, (0.01, 1.0), strict=True):  # two seeds far apart: CI low < 0
        r["history"][-1]["train_loss"] = loss
    plots.plot_curves(records, tmp_path / "c.png", "t")
    band = [c for c in drawn[0].axes[0].collections if isinstance(c, PolyCollection)][0]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.01)


def test_effects_axis_is_symmetric_around_zero_with_verdicts(drawn, tmp_path):
    plots.plot_effects(EFFECTS, tmp_path / "e.png", "t", unit="points")
    (ax,) = drawn[0].axes
    left, right = ax.get_xlim()
    assert left == pytest.approx(-right) and left < 0 < right
    assert right >= 26.9  # every interval and seed fits
    assert len(_points(ax)) == 6
    assert sorted(_points(ax)[:, 0]) == sorted(EFFECTS[0].per_seed + EFFECTS[1].per_seed)
    assert [_bar(c) for c in ax.containers] == [(7.1, 26.9), (-2.0, 1.8)]
    assert {t.get_text() for t in ax.texts} == {"supports", "inconclusive"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a - b", "c - b"]
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.lines)  # the line at 0


def test_effects_accept_any_object_with_the_fields(drawn, tmp_path):
    Row = namedtuple("Row", "label per_seed diff low high verdict")
    plots.plot_effects([Row("x", [1.0, 3.0], 2.0, 0.5, 3.5, "supports"),
                        ("y", [-4.0], -4.0, -4.0, -4.0, "inconclusive")], tmp_path / "e.png", "t")
    left, right = drawn[0].axes[0].get_xlim()
    assert left == pytest.approx(-right) and right >= 4.0


def test_effects_all_positive_still_show_zero(drawn, tmp_path):
    plots.plot_effects([Effect("x", [10.0, 11.0], 10.5, 10.0, 11.0, "supports")], tmp_path / "e.png", "t")
    left, right = drawn[0].axes[0].get_xlim()
    assert left < 0 < right and left == pytest.approx(-right)


def test_cost_plots_accuracy_against_params_and_macs(drawn, tmp_path):
    plots.plot_cost(RECORDS, tmp_path / "k.png", "t")
    axes = drawn[0].axes
    assert len(axes) == 2
    for ax, scale in zip(axes, (1, 40), strict=True):
        assert ax.get_xscale() == "log"
        pts = _points(ax)
        assert len(pts) == 6
        _assert_zoomed(ax.get_ylim(), [*pts[:, 1], *(e for c in ax.containers for e in _bar(c))])
        for c in ax.containers:  # the mean at the variant's cost, its seeds apart, left of it
            near = pts[np.abs(np.log10(pts[:, 0] / _mean_x(c))) < 0.1]
            assert len(near) == 3 and (near[:, 0] < _mean_x(c) / 1.02).all()
        assert _mean_x(ax.containers[0]) == pytest.approx(1.5e6 * scale)
        a_pts = pts[np.abs(np.log10(pts[:, 0] / (1.5e6 * scale))) < 0.05]
        assert sorted(a_pts[:, 1]) == pytest.approx([80, 82, 84])
        a_means = [c for c in ax.containers if c.get_label() == "a"]
        assert _bar(a_means[0]) == pytest.approx(mean_ci([80.0, 82.0, 84.0])[1:])
        _, lo, hi = mean_ci([65.0, 70.0, 60.0])
        assert _bar(ax.containers[1]) == pytest.approx((lo, hi))
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["a", "b"]


def test_benefit_shows_trend_ci_and_zero(drawn, tmp_path):
    per_seed = [[3.0, 4.0, 5.0], [2.0, 3.0, 2.0], [5.0, 6.0, 5.5], [5.0, 6.0, 7.0]]  # CIs all > 0
    plots.plot_benefit([1, 2, 4, 8], per_seed, tmp_path / "b.png", "t")
    (ax,) = drawn[0].axes
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 4, 8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    low, high = ax.get_ylim()
    assert low < 0 < high  # all benefits positive, and 0 is still on the axis
    for c, values in zip(ax.containers, per_seed, strict=True):
        _, lo, hi = mean_ci(values)
        assert _bar(c) == pytest.approx((lo, hi))
        assert low <= lo and hi <= high
    means = [line for line in ax.lines if line.get_linestyle() == "--"][0]
    assert list(means.get_ydata()) == pytest.approx([4.0, 7 / 3, 5.5, 6.0])
    # a line per seed through its benefit at every level: the per-seed slopes are what is tested
    seed_lines = [line for line in ax.lines if line.get_label().startswith("seed ")]
    assert len(seed_lines) == 3
    for j, line in enumerate(seed_lines):
        assert list(line.get_ydata()) == pytest.approx([values[j] for values in per_seed])
        assert line.get_linestyle() == "-"  # linked across the levels, not loose points
        assert np.allclose(np.log2(line.get_xdata()), [0, 1, 2, 3], atol=0.15)
    slope = np.polyfit([0, 1, 2, 3], [values[0] for values in per_seed], 1)[0]
    assert seed_lines[0].get_label() == f"seed 0: {slope:+.2f} per doubling"
    assert "A − B" in ax.get_ylabel()


def test_benefit_needs_one_list_per_level_and_the_same_seeds(tmp_path):
    with pytest.raises(ValueError, match="3 levels but 2"):
        plots.plot_benefit([1, 2, 4], [[1.0], [2.0]], tmp_path / "b.png", "t")
    with pytest.raises(ValueError, match="the same seeds"):
        plots.plot_benefit([1, 2], [[1.0, 2.0], [2.0]], tmp_path / "b.png", "t")


MIXED = [Effect("trend", [0.5, 1.5, 1.0], 1.0, 0.2, 1.8, "supports", "slope per step over x → y",
                trend=True),
         Effect("order", [-0.3, 0.1, -0.2], -0.13, -0.6, 0.3, "inconclusive", "p − q", margin=0.5),
         Effect("size", [4.0, 5.0, 6.0], 5.0, 2.5, 7.5, "supports", "p − r")]


def test_effects_put_trends_and_differences_on_separate_axes(drawn, tmp_path):
    plots.plot_effects(MIXED, tmp_path / "e.png", "t")
    trend_ax, diff_ax = drawn[0].axes
    assert [t.get_text().split("\n")[0] for t in trend_ax.get_yticklabels()] == ["trend"]
    assert [t.get_text().split("\n")[0] for t in diff_ax.get_yticklabels()] == ["order", "size"]
    assert sorted(_points(trend_ax)[:, 0]) == [0.5, 1.0, 1.5]
    assert len(_points(diff_ax)) == 6
    assert "points per step" in trend_ax.get_xlabel() and "points" in diff_ax.get_xlabel()
    assert trend_ax.get_xlim()[1] < 3 < diff_ax.get_xlim()[1]  # each axis its own scale
    for ax in (trend_ax, diff_ax):
        left, right = ax.get_xlim()
        assert left == pytest.approx(-right)


def test_effects_say_what_is_subtracted_from_what(drawn, tmp_path):
    plots.plot_effects(MIXED, tmp_path / "e.png", "t")
    trend_ax, diff_ax = drawn[0].axes
    assert "[p − q]" in diff_ax.get_yticklabels()[0].get_text()
    assert "A − B" in diff_ax.get_xlabel()  # rows differ: the axis names the form, rows the pair
    assert trend_ax.get_xlabel().startswith("slope per step over x → y")
    assert "A − B" in drawn[0]._suptitle.get_text()
    drawn.clear()
    plots.plot_effects([MIXED[2]], tmp_path / "e.png", "t")
    assert drawn[0].axes[0].get_xlabel() == "p − r, points"  # one pair: the axis names it


def test_effects_draw_the_equivalence_margin_of_equal_claims(drawn, tmp_path):
    plots.plot_effects(MIXED, tmp_path / "e.png", "t")
    _, diff_ax = drawn[0].axes
    edges = [line for line in diff_ax.lines if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in edges) == [-0.5, 0.5]
    assert all(line.get_xdata()[0] == line.get_xdata()[1] for line in edges)
    assert all(abs(np.mean(line.get_ydata()) - 0) < 1e-9 for line in edges)  # on the "order" row
    assert "equivalence margin ±0.5" in diff_ax.get_xlabel()


def test_effects_seeds_sit_apart_from_the_mean(drawn, tmp_path):
    plots.plot_effects(EFFECTS, tmp_path / "e.png", "t")
    (ax,) = drawn[0].axes
    for i, effect in enumerate(EFFECTS):
        row = _points(ax)[np.abs(_points(ax)[:, 1] - i) < 0.45]
        assert len(row) == len(effect.per_seed)
        assert np.abs(row[:, 1] - i).min() > 0.1  # none on the mean's row, behind its marker


def _records_of(exp, seeds=3):
    return [{**_record("a", s, 0.8 + 0.01 * i + 0.003 * s * (i % 2)), "variant": v.name,
             "params": 1000 * (i + 1)} for i, v in enumerate(exp.variants) for s in range(seeds)]


def test_the_report_draws_margins_for_equal_claims_and_a_line_per_seed_for_a_benefit(drawn, tmp_path):
    from xception.experiments import base_config, get_experiment
    from xception.experiments.report import write_plots
    from xception.experiments.verdicts import evaluate

    def experiment(name):
        return get_experiment(name, "xception_small", base_config(["data.name=digits"]).model.overrides)

    order = experiment("order")
    records = _records_of(order)
    write_plots(order, records, evaluate(order, records), tmp_path)
    curves, summary, effects = drawn
    assert len(_points(summary.axes[0])) == 3 * 4  # seeds x variants
    (ax,) = effects.axes
    assert sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--") == \
        [-0.5, -0.5, 0.5, 0.5]  # ±0.5 on each of the two "equal" rows
    assert "[depthwise-first − pointwise-first]" in ax.get_yticklabels()[0].get_text()
    drawn.clear()
    compression = experiment("compression")
    records = _records_of(compression)
    write_plots(compression, records, evaluate(compression, records), tmp_path)
    effects, benefit = drawn[2], drawn[3]
    assert len(effects.axes) == 2  # the trend apart from the differences
    assert not [line for ax in effects.axes for line in ax.lines if line.get_linestyle() == "--"]
    (ax,) = benefit.axes
    assert len([line for line in ax.lines if line.get_label().startswith("seed ")]) == 3
    assert "ratio 1 − ratio 1, no residual" in ax.get_title()
