"""Experiment plots: val curves with a shaded band over seeds, and a summary bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..training.curves import agg_pyplot
from .stats import by_variant


def _save(fig, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        agg_pyplot().close(fig)


def plot_seed_curves(records: list[dict], path: Path, title: str) -> Path:
    """Val top-1 and val loss per epoch: mean line, mean ± std band over seeds.

    The loss axis is logarithmic, where mean - std can be <= 0: that band edge is floored at the
    lowest seed's loss, so the band never claims values no seed reached."""
    plt = agg_pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (variant, runs) in enumerate(by_variant(records).items()):
        epochs = np.array([h["epoch"] for h in runs[0]["history"]])
        for ax, key, scale in ((ax1, "val_top1", 100.0), (ax2, "val_loss", 1.0)):
            ys = scale * np.array([[h[key] for h in r["history"]] for r in runs])
            mean, std = ys.mean(0), ys.std(0, ddof=1) if len(runs) > 1 else np.zeros(ys.shape[1])
            ax.plot(epochs, mean, "-o", ms=3, color=f"C{i}", label=variant)
            low = mean - std if key == "val_top1" else np.maximum(mean - std, ys.min(0))
            ax.fill_between(epochs, low, mean + std, color=f"C{i}", alpha=0.2)
    ax1.set(xlabel="epoch", ylabel="val top-1 (%)")
    ax2.set(xlabel="epoch", ylabel="val loss", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{title} (mean ± std over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_summary(rows: list[dict], path: Path, title: str) -> Path:
    """Final val top-1 per variant with ±std error bars; parameter counts in the labels."""
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.2))
    x = np.arange(len(rows))
    means = [100 * r["final_top1"][0] for r in rows]
    stds = [100 * r["final_top1"][1] for r in rows]
    ax.bar(x, means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(rows))])
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_ylim(max(0.0, low - 5), 100)
    labels = [f"{r['variant']}\n{r['params'] / 1e6:.2f}M params" for r in rows]
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="final val top-1 (%)", title=f"{title}: final accuracy (error bars: std)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
