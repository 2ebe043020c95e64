"""Experiment plots that show the tested effect, not just the means.

Every plot draws each seed (so a reader sees the spread and any outlier), the mean with its 95%
confidence interval (t-based, ``significance.mean_ci``: what the statistics in the report use), and
axes that do not exaggerate: accuracies on 0-100%, differences on an axis symmetric around 0.
matplotlib is imported only when a plot is drawn (``agg_pyplot``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..training.curves import agg_pyplot
from .significance import mean_ci
from .stats import by_variant

__all__ = ["Effect", "plot_benefit", "plot_cost", "plot_curves", "plot_effects", "plot_summary"]

CI_LABEL = "mean, 95% CI"
SEED_STYLE = {"s": 14, "alpha": 0.55, "linewidths": 0, "zorder": 2}


@dataclass(frozen=True)
class Effect:
    """One comparison for ``plot_effects``: per-seed differences (already in the plot's unit), their
    mean with its 95% CI, and the report's verdict word."""

    label: str
    per_seed: list[float]
    diff: float
    low: float
    high: float
    verdict: str


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


def _mean_errorbar(ax, x: float, values: Sequence[float], color: str, **kw) -> tuple[float, float, float]:
    """The mean of ``values`` with its 95% CI as an error bar at ``x``; returns (mean, low, high)."""
    mean, low, high = mean_ci(list(values))
    ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="D", ms=6, color=color,
                capsize=4, elinewidth=1.6, zorder=3, **kw)
    return mean, low, high


def plot_curves(records: list[dict], path: str | Path, title: str) -> Path:
    """Training loss and validation top-1 per epoch: every seed thin, the mean thick, and the 95% CI
    of the mean as a band, so convergence (loss) and the accuracy gap are read with their noise.

    The loss axis is logarithmic; where a CI's lower edge is <= 0 (few seeds, wide spread) it is
    floored at the lowest seed's loss, since a log axis cannot show it."""
    plt = agg_pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for i, (variant, runs) in enumerate(by_variant(records).items()):
        color = f"C{i}"
        epochs = np.array([h["epoch"] for h in runs[0]["history"]])
        for ax, key, scale in ((ax1, "train_loss", 1.0), (ax2, "val_top1", 100.0)):
            ys = scale * np.array([[h[key] for h in r["history"]] for r in runs], dtype=float)
            for seed_curve in ys:
                ax.plot(epochs, seed_curve, "-", lw=0.7, alpha=0.35, color=color)
            mean, low, high = _ci_per_column(ys)
            if key == "train_loss":
                low = np.where(low > 0, low, ys.min(0))
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, lw=0)
            ax.plot(epochs, mean, "-o", lw=2, ms=3.5, color=color, label=variant)
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.set(xlabel="epoch", ylabel="val top-1 (%)", ylim=(0, 100))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title} (mean, 95% CI band, thin lines: seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_summary(records: list[dict], path: str | Path, title: str, metric: str = "final_top1",
                 label: str = "final val top-1 (%)") -> Path:
    """Per variant: each seed's ``metric`` (a fraction, drawn in %) as a point and the mean with its
    95% CI beside it, on a 0-100% axis, so a gap is seen next to the seed-to-seed spread."""
    plt = agg_pyplot()
    groups = by_variant(records)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 4.4))
    labels = []
    for i, (variant, runs) in enumerate(groups.items()):
        values = [100.0 * r[metric] for r in runs]
        ax.scatter(i - 0.15 + _jitter(len(values), 0.08), values, color=f"C{i}", **SEED_STYLE)
        _mean_errorbar(ax, i + 0.15, values, f"C{i}")
        labels.append(f"{variant}\n{runs[0]['params'] / 1e6:.2f}M params")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=label, ylim=(0, 100), xlim=(-0.6, len(labels) - 0.4))
    ax.set_title(f"{title}: {label}\n(points: seeds; diamond and bar: {CI_LABEL})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_effects(effects: Sequence[Effect], path: str | Path, title: str, unit: str = "points") -> Path:
    """One row per comparison: the mean difference with its 95% CI, the per-seed differences, a line
    at 0 and the verdict. The axis is symmetric around 0, so neither sign looks favoured and whether
    the interval excludes 0 is read at a glance. Any objects with ``Effect``'s attributes work."""
    plt = agg_pyplot()
    effects = [Effect(*effect) if isinstance(effect, tuple) and not hasattr(effect, "label")
               else effect for effect in effects]
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.75 * max(1, len(effects))))
    extent = []
    for i, effect in enumerate(effects):
        seeds = np.asarray(effect.per_seed, dtype=float)
        ax.scatter(seeds, i + _jitter(len(seeds), 0.12), color="0.35", **SEED_STYLE)
        ax.errorbar([effect.diff], [i], xerr=[[effect.diff - effect.low], [effect.high - effect.diff]],
                    fmt="D", ms=6, color=f"C{i}", capsize=4, elinewidth=1.8, zorder=3)
        ax.text(1.02, i, effect.verdict, transform=ax.get_yaxis_transform(), va="center",
                fontsize=9)
        extent += [*seeds, effect.diff, effect.low, effect.high]
    finite = np.abs(np.asarray(extent, dtype=float))
    finite = finite[np.isfinite(finite)]
    half = 1.15 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ax.axvline(0.0, color="black", lw=1)
    ax.set_xlim(-half, half)
    ax.set_ylim(len(effects) - 0.5, -0.5)  # first effect on top
    ax.set_yticks(range(len(effects)), [textwrap.fill(effect.label, 30) for effect in effects],
                  fontsize=8)
    ax.set_xlabel(f"difference ({unit})")
    ax.set_title(f"{title}: effects\n(diamond and bar: {CI_LABEL}; points: seeds)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_cost(records: list[dict], path: str | Path, title: str) -> Path:
    """Final val top-1 against parameters and against multiply-adds (log x): whether a variant's
    accuracy is bought with size or compute, which the spectrum's unmatched design confounds."""
    plt = agg_pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    groups = by_variant(records)
    for ax, key, xlabel in zip(axes, ("params", "macs"), ("parameters", "multiply-adds per image"),
                               strict=True):
        xs = []
        for i, (variant, runs) in enumerate(groups.items()):
            x = float(runs[0][key])
            xs.append(x)
            values = [100.0 * r["final_top1"] for r in runs]
            # seeds just left of the mean, nearer to it than parameter-matched variants lie to
            # each other
            seed_x = x * 10 ** (-0.004 + _jitter(len(values), 0.002))
            ax.scatter(seed_x, values, color=f"C{i}", **SEED_STYLE)
            _mean_errorbar(ax, x * 10 ** 0.003, values, f"C{i}", label=variant)
        ax.set(xscale="log", xlabel=xlabel, ylim=(0, 100))
        # short labels at 1, 2, 3, 5 x 10^k (matplotlib's default labels every minor tick of a
        # short log range, and the labels run into each other)
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if xs:
            ax.set_xlim(min(xs) / 1.6, max(xs) * 1.8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final val top-1 (%)")
    axes[0].legend(fontsize=8, loc="lower right")  # labels beside points overlap when close
    fig.suptitle(f"{title}: accuracy vs cost (points: seeds; diamond and bar: {CI_LABEL})")
    fig.tight_layout()
    return _save(fig, path)


def plot_benefit(levels: Sequence[float], per_seed: Sequence[Sequence[float]], path: str | Path,
                 title: str, xlabel: str = "bottleneck ratio",
                 ylabel: str = "residual benefit (points)") -> Path:
    """A benefit (e.g. residual minus no-residual, per seed) at each level of an ordered factor:
    seeds, mean and 95% CI, a line through the means and one at 0, so the trend and where the
    benefit stops being distinguishable from 0 are both visible."""
    if len(levels) != len(per_seed):
        raise ValueError(f"{len(levels)} levels but {len(per_seed)} lists of per-seed values")
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    means, extent = [], [0.0]
    for level, values in zip(levels, per_seed, strict=True):
        ax.scatter(level * 2.0 ** (-0.06 + _jitter(len(values), 0.04)), values, color="C0", **SEED_STYLE)
        mean, low, high = _mean_errorbar(ax, level * 2.0 ** 0.06, values, "C1")
        means.append(mean)
        extent += [*values, low, high]
    ax.plot([level * 2.0 ** 0.06 for level in levels], means, "-", color="C1", lw=1.5, zorder=2)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(levels), [f"{level:g}" for level in levels])
    ax.minorticks_off()
    bottom, top = min(extent), max(extent)
    pad = 0.1 * (top - bottom) or 1.0
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(bottom - pad, top + pad))
    ax.set_title(f"{title}: {ylabel}\n(points: seeds; diamond and bar: {CI_LABEL})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
