"""Training curves as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..files import atomic_write


def agg_pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported when a plot is drawn:
    matplotlib takes about a second to import and most commands never plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss (train and val) and val top-1 per epoch, side by side."""
    plt = agg_pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label="val")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log")
    ax1.legend()
    ax2.plot(epochs, [100 * h["val_top1"] for h in history], "s-", color="C1", label="val top-1")
    if "ema_val_top1" in history[0]:  # Polyak-averaged weights, when the run keeps them
        ax2.plot(epochs, [100 * h["ema_val_top1"] for h in history], "^-", color="C2",
                 label="val top-1 (EMA)")
    if "val_map100" in history[0]:    # multi-label runs
        ax2.plot(epochs, [100 * h["val_map100"] for h in history], "d-", color="C3",
                 label="val MAP@100")
    ax2.set(xlabel="epoch", ylabel="val metric (%)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
