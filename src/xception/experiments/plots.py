"""Experiment plots that show the tested effect, not just the means.

Every plot draws each seed beside (never behind) the mean with its 95% confidence interval
(t-based, ``significance.mean_ci``: what the statistics in the report use), on an axis zoomed to
the data (every seed and every interval, with a margin) so that the effect is visible, and says
in its title or axis what is subtracted from what (or that it shows values, not differences).
Differences are drawn on axes symmetric around 0 (neither sign looks favoured), trends (points
per step) on an axis of their own, and "equal" claims with their equivalence margin.
matplotlib is imported only when a plot is drawn (``agg_pyplot``, the Agg backend).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..training.curves import agg_pyplot
from .significance import mean_ci, slopes
from .stats import by_variant

__all__ = ["Effect", "plot_benefit", "plot_cost", "plot_curves", "plot_effects", "plot_summary"]

CI_LABEL = "mean, 95% CI"
SEED_STYLE = {"s": 14, "alpha": 0.7, "linewidths": 0, "zorder": 2}
VALUES = "values per variant, not differences"
ZOOM = "axis zoomed to the data"
PAD = 0.08  # margin around the data on a zoomed axis, as a share of the data's range


@dataclass(frozen=True)
class Effect:
    """One comparison for ``plot_effects``: per-seed effects (already in the plot's unit), their
    mean with its 95% CI, the report's verdict, and what it is: ``contrast`` ("A − B" in words),
    ``trend`` (a slope, points per step: drawn on an axis of its own) and ``margin`` (the
    equivalence margin of an "equal" claim, drawn as ±margin; None for others)."""

    label: str
    per_seed: list[float]
    diff: float
    low: float
    high: float
    verdict: str
    contrast: str = ""
    trend: bool = False
    margin: float | None = None


def _save(fig, path: str | Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        agg_pyplot().close(fig)


def _ci_per_column(ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% CI of each column of ``ys`` (rows: seeds): the band of a curve plot."""
    mean, low, high = np.array([mean_ci(list(column)) for column in ys.T], dtype=float).T
    return mean, low, high


def _jitter(n: int, width: float) -> np.ndarray:
    """Deterministic offsets spread over [-width, width]: seeds side by side, same picture every run."""
    return np.linspace(-width, width, n) if n > 1 else np.zeros(n)


def _zoom(values, pad: float = PAD, least: float = 0.5) -> tuple[float, float]:
    """Axis limits around ``values`` (finite ones): their range with ``pad`` of it on each side,
    at least ``least`` (units of the values) in all, so a flat set is not drawn as a line."""
    finite = np.asarray(values, dtype=float).ravel()
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    margin = max(pad * (high - low), (least - (high - low)) / 2, 0.0)
    return low - margin, high + margin


def _mean_errorbar(ax, x: float, values: Sequence[float], color: str, **kw) -> tuple[float, float, float]:
    """The mean of ``values`` with its 95% CI as an error bar at ``x``; returns (mean, low, high)."""
    mean, low, high = mean_ci(list(values))
    ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="D", ms=6, color=color,
                capsize=4, elinewidth=1.6, zorder=3, **kw)
    return mean, low, high


def plot_curves(records: list[dict], path: str | Path, title: str) -> Path:
    """Training loss and validation top-1 per epoch: every seed thin, the mean thick, and the 95% CI
    of the mean as a band, so convergence (loss) and the accuracy gap are read with their noise.
    The accuracy axis is zoomed to the seeds and bands.

    The loss axis is logarithmic; where a CI's lower edge is <= 0 (few seeds, wide spread) it is
    floored at the lowest seed's loss, since a log axis cannot show it."""
    plt = agg_pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    shown = []
    for i, (variant, runs) in enumerate(by_variant(records).items()):
        color = f"C{i}"
        epochs = np.array([h["epoch"] for h in runs[0]["history"]])
        for ax, key, scale in ((ax1, "train_loss", 1.0), (ax2, "val_top1", 100.0)):
            ys = scale * np.array([[h[key] for h in r["history"]] for r in runs], dtype=float)
            for seed_curve in ys:
                ax.plot(epochs, seed_curve, "-", lw=0.8, alpha=0.45, color=color)
            mean, low, high = _ci_per_column(ys)
            if key == "train_loss":
                low = np.where(low > 0, low, ys.min(0))
            else:
                shown += [ys, low, high]
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, lw=0)
            ax.plot(epochs, mean, "-o", lw=2, ms=3.5, color=color, label=variant)
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.set(xlabel="epoch", ylabel="val top-1 (%)",
            ylim=_zoom(np.concatenate([np.ravel(v) for v in shown]) if shown else []))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: {VALUES} (mean, 95% CI band, thin lines: seeds; {ZOOM})")
    fig.tight_layout()
    return _save(fig, path)


def plot_summary(records: list[dict], path: str | Path, title: str, metric: str = "final_top1",
                 label: str = "final val top-1 (%)") -> Path:
    """Per variant: each seed's ``metric`` (a fraction, drawn in %) as a point, spread sideways,
    left of the mean with its 95% CI (so no seed hides behind it), on an axis zoomed to the
    seeds and intervals, so a gap is seen next to the seed-to-seed spread."""
    plt = agg_pyplot()
    groups = by_variant(records)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 4.6))
    labels, shown = [], []
    for i, (variant, runs) in enumerate(groups.items()):
        values = [100.0 * r[metric] for r in runs]
        ax.scatter(i - 0.2 + _jitter(len(values), 0.1), values, color=f"C{i}", **SEED_STYLE)
        shown += [*values, *_mean_errorbar(ax, i + 0.15, values, f"C{i}")]
        labels.append(f"{variant}\n{runs[0]['params'] / 1e6:.2f}M params")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=label, ylim=_zoom(shown), xlim=(-0.6, len(labels) - 0.4))
    ax.set_title(f"{title}: {label}, {VALUES}\n(points: seeds; diamond and bar: {CI_LABEL};\n"
                 f"{ZOOM})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _as_effect(effect) -> Effect:
    """An ``Effect`` from a tuple of its fields or any object with its first six attributes."""
    if isinstance(effect, Effect):
        return effect
    if isinstance(effect, tuple) and not hasattr(effect, "label"):
        return Effect(*effect)
    return Effect(effect.label, list(effect.per_seed), effect.diff, effect.low, effect.high,
                  effect.verdict, getattr(effect, "contrast", ""), getattr(effect, "trend", False),
                  getattr(effect, "margin", None))


def _effect_axis(ax, effects: Sequence[Effect], unit: str, what: str) -> None:
    """One axis of ``plot_effects``: a row per effect, seeds just below the mean's row."""
    extent = [0.0]
    for i, effect in enumerate(effects):
        seeds = np.asarray(effect.per_seed, dtype=float)
        ax.scatter(seeds, i + 0.22 + _jitter(len(seeds), 0.08), color="0.3", **SEED_STYLE)
        ax.errorbar([effect.diff], [i], xerr=[[effect.diff - effect.low], [effect.high - effect.diff]],
                    fmt="D", ms=6, color=f"C{i}", capsize=4, elinewidth=1.8, zorder=3)
        if effect.margin is not None:
            for edge in (-effect.margin, effect.margin):
                ax.plot([edge, edge], [i - 0.42, i + 0.42], "--", color="C3", lw=1.2, zorder=1)
            ax.fill_betweenx([i - 0.42, i + 0.42], -effect.margin, effect.margin, color="C3",
                             alpha=0.08, lw=0, zorder=0)
            extent += [-effect.margin, effect.margin]
        ax.text(1.02, i, textwrap.fill(effect.verdict, 28), transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
        extent += [*seeds, effect.diff, effect.low, effect.high]
    finite = np.abs(np.asarray(extent, dtype=float))
    finite = finite[np.isfinite(finite)]
    half = (1 + 1.5 * PAD) * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ax.axvline(0.0, color="black", lw=1)
    ax.set_xlim(-half, half)
    ax.set_ylim(len(effects) - 0.5, -0.5)  # first effect on top
    ax.set_yticks(range(len(effects)),
                  [textwrap.fill(effect.label, 34) + (f"\n[{textwrap.fill(effect.contrast, 34)}]"
                                                      if effect.contrast else "")
                   for effect in effects], fontsize=7)
    contrasts = {effect.contrast for effect in effects}
    margins = sorted({effect.margin for effect in effects if effect.margin is not None})
    shaded = (f"; dashed, shaded: equivalence margin ±{', ±'.join(f'{m:g}' for m in margins)}"
              if margins else "")
    ax.set_xlabel(f"{contrasts.pop() if len(contrasts) == 1 and '' not in contrasts else what}, "
                  f"{unit}{shaded}")
    ax.grid(axis="x", alpha=0.3)


def plot_effects(effects: Sequence[Effect], path: str | Path, title: str, unit: str = "points",
                 trend_unit: str = "points per step") -> Path:
    """One row per comparison: the mean effect with its 95% CI, the per-seed effects (just below
    it), a line at 0, an "equal" claim's equivalence margin and the verdict. Trends (slopes) and
    differences are on separate axes, each symmetric around 0, so neither sign looks favoured
    and whether an interval excludes 0 (or stays inside a margin) is read at a glance. Each row
    and axis says what is subtracted from what. Any objects with ``Effect``'s attributes work
    (tuples of its first six fields too)."""
    plt = agg_pyplot()
    effects = [_as_effect(effect) for effect in effects]
    groups = [(group, kind_unit, what) for group, kind_unit, what in (
        ([e for e in effects if e.trend], trend_unit,
         "trend: the per-seed slope of the row's A − B (or value) per step"),
        ([e for e in effects if not e.trend], unit, "difference A − B as named on each row"))
        if group]
    rows = [max(1, len(group)) for group, _, _ in groups] or [1]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.3 + 0.85 * sum(rows) + 0.7 * len(rows)),
                             gridspec_kw={"height_ratios": rows}, squeeze=False)
    for ax, (group, kind_unit, what) in zip(axes[:, 0], groups, strict=False):
        _effect_axis(ax, group, kind_unit, what)
    fig.suptitle(f"{title}: tested effects, A − B\n(diamond and bar: {CI_LABEL}; points just "
                 "below: seeds" + ("; trends and differences on separate axes" if len(groups) > 1
                                   else "") + ")", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_cost(records: list[dict], path: str | Path, title: str) -> Path:
    """Final val top-1 against parameters and against multiply-adds (log x): whether a variant's
    accuracy is bought with size or compute, which the spectrum's unmatched design confounds.
    The mean sits at the variant's cost, its seeds just left of it (offset by a share of the
    axis' log range); the accuracy axis is zoomed to the seeds and intervals."""
    plt = agg_pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    groups = by_variant(records)
    shown = []
    for ax, key, xlabel in zip(axes, ("params", "macs"), ("parameters", "multiply-adds per image"),
                               strict=True):
        xs = [float(runs[0][key]) for runs in groups.values()]
        span = math.log10(max(xs) / min(xs)) if xs else 1.0  # decades the variants span
        margin = 10 ** max(0.2 * span, 0.05)  # around them: a share of that, at least ~12%
        left, right = (min(xs) / margin, max(xs) * margin) if xs else (1.0, 10.0)
        decades = math.log10(right / left)  # the axis' width in decades: offsets are a share of it
        for i, (x, (variant, runs)) in enumerate(zip(xs, groups.items(), strict=True)):
            values = [100.0 * r["final_top1"] for r in runs]
            seed_x = x * 10 ** (decades * (-0.03 + _jitter(len(values), 0.01)))
            ax.scatter(seed_x, values, color=f"C{i}", **SEED_STYLE)
            shown += [*values, *_mean_errorbar(ax, x, values, f"C{i}", label=variant)]
        ax.set(xscale="log", xlabel=xlabel)
        # short labels at 1, 2, 3, 5 x 10^k (matplotlib's default labels every minor tick of a
        # short log range, and the labels run into each other)
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlim(left, right)
        ax.grid(alpha=0.3, which="both")
    axes[0].set(ylabel="final val top-1 (%)", ylim=_zoom(shown))
    axes[0].legend(fontsize=8, loc="lower right")  # labels beside points overlap when close
    fig.suptitle(f"{title}: accuracy vs cost, {VALUES}\n(points, left of each mean: seeds; "
                 f"diamond and bar: {CI_LABEL}; {ZOOM})", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_benefit(levels: Sequence[float], per_seed: Sequence[Sequence[float]], path: str | Path,
                 title: str, xlabel: str = "bottleneck ratio", ylabel: str = "A − B (points)",
                 contrast: str = "", seeds: Sequence[int] | None = None,
                 ticks: Sequence[str] | None = None) -> Path:
    """A benefit A − B (e.g. residual minus no residual, per seed) at each level of an ordered
    factor (log2 axis). ``per_seed[level][j]`` is seed j's: each seed is one line across the
    levels (the per-seed slopes are what the trend test tests; the legend gives each), beside the
    mean and 95% CI at each level and a line at 0, on an axis zoomed to the data and 0.
    ``ticks``: the levels' labels where they are not the levels themselves (training-set sizes)."""
    if len(levels) != len(per_seed):
        raise ValueError(f"{len(levels)} levels but {len(per_seed)} lists of per-seed values")
    counts = {len(values) for values in per_seed}
    if len(counts) > 1:
        raise ValueError(f"every level needs the same seeds, got {sorted(counts)} values per level")
    n = counts.pop() if counts else 0
    seeds = list(seeds) if seeds is not None else list(range(n))
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    table = np.asarray(per_seed, dtype=float).reshape(len(levels), n).T  # [seed][level]
    steps = [math.log2(level) for level in levels]
    offsets = _jitter(n, 0.05) - 0.07
    for j, (seed, row, slope) in enumerate(zip(seeds, table, slopes(table.tolist(), steps) if n else [],
                                               strict=True)):
        ax.plot([level * 2.0 ** offsets[j] for level in levels], row, "-o", ms=3.5, lw=0.9,
                alpha=0.75, color=f"C{j % 10}", label=f"seed {seed}: {slope:+.2f} per doubling",
                zorder=2)
    means, extent = [], [0.0, *table.ravel()]
    for level, values in zip(levels, per_seed, strict=True):
        mean, low, high = _mean_errorbar(ax, level * 2.0 ** 0.08, values, "black")
        means.append(mean)
        extent += [low, high]
    ax.plot([level * 2.0 ** 0.08 for level in levels], means, "--", color="black", lw=1.3, zorder=2,
            label=CI_LABEL)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(levels), list(ticks) if ticks else [f"{level:g}" for level in levels])
    ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=_zoom(extent))
    ax.legend(fontsize=7, loc="best", title="lines: seeds (slope of A − B)", title_fontsize=7)
    what = f"\nA − B: {contrast}" if contrast else ""
    ax.set_title(f"{title}: {ylabel} at each {xlabel}{what}\n(a line per seed; diamond and bar: "
                 f"{CI_LABEL}; {ZOOM})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
