"""Evaluating saved weights: on the validation split they were trained against (``evaluate_saved``),
or on any data whose classes the weights know (``evaluate_data``), with per-class accuracy and a
confusion matrix (``write_eval_report``: CSV and PNG)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import build_datasets, make_loader
from ..errors import ConfigError
from ..evaluation import evaluate, loss_sum
from ..files import atomic_write
from ..metrics import topk_correct
from .inputs import batches
from .model import class_names_of, load_for_inference
from .sources import eval_data, own_section


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def evaluate_saved(path: str | Path, batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Top-1/top-5/loss (and MAP@100 / mAP for multi-label data) of saved weights on the
    validation split they were trained against."""
    _check_batch_size(batch_size)
    model, meta, dev = load_for_inference(path, device)
    data = own_section(meta, repr(str(path)))
    _, val_ds, info = build_datasets(data)
    return {"data": data.name, **evaluate(model, make_loader(val_ds, batch_size, False), dev,
                                          class_weights=info.class_weights)}


@dataclass
class EvalReport:
    """One evaluation: the headline metrics and, for single-label data, the confusion matrix."""

    data: str                           # what was evaluated ("digits val", "ImageFolder 'x'")
    metrics: dict[str, Any]             # loss, top1, top5, count, bad (+ map100, map)
    class_names: list[str]              # the weights' classes: the matrix's rows and columns
    confusion: np.ndarray | None        # [true class, predicted class] counts; None: multi-label
    missing: list[str] = field(default_factory=list)   # weights' classes with no image here
    bad_paths: list[tuple[str, str]] = field(default_factory=list)  # the first unreadable ones

    def per_class(self) -> list[tuple[str, int, int]]:
        """(class, images, correct) for every class with images, in the weights' order."""
        if self.confusion is None:
            return []
        totals, right = self.confusion.sum(axis=1), np.diag(self.confusion)
        return [(name, int(n), int(c)) for name, n, c in
                zip(self.class_names, totals, right, strict=True) if n]


@torch.inference_mode()
def _single_label(model: nn.Module, loader: Any, device: torch.device,
                  n: int) -> tuple[dict[str, Any], np.ndarray, list[tuple[str, str]]]:
    confusion = torch.zeros(n * n, dtype=torch.int64)
    loss, c1, c5, seen, bad = 0.0, 0, 0, 0, []
    for batch in loader:
        bad += batch.bad
        if batch.x is None:
            continue
        logits = model(batch.x.to(device)).float()
        y = batch.y.to(device)
        loss += float(loss_sum(logits, y))
        a, b = topk_correct(logits, y, (1, 5))
        c1, c5, seen = c1 + a, c5 + b, seen + len(y)
        confusion += torch.bincount(y.cpu() * n + logits.argmax(1).cpu(), minlength=n * n)
    m = max(seen, 1)
    metrics = {"loss": loss / m, "top1": c1 / m, "top5": c5 / m, "count": seen, "bad": len(bad)}
    return metrics, confusion.view(n, n).numpy(), bad[:10]


def evaluate_data(path: str | Path, data: str | None = None, batch_size: int = 256,
                  device: str = "auto", num_workers: int = 0) -> EvalReport:
    """Saved weights on ``data`` (a data set name, ImageFolder root, folder of class folders or
    manifest: ``sources.eval_data``; None: the data they were trained on). The data's class names
    must all be the weights'; classes are matched by name, not position."""
    _check_batch_size(batch_size)
    model, meta, dev = load_for_inference(path, device)
    names = class_names_of(meta, model)
    chosen = eval_data(data, meta, model, names)
    if bool(meta.get("multi_label")) != chosen.multi_label:
        kind = "multi-label" if meta.get("multi_label") else "single-label"
        raise ConfigError(f"these weights are {kind} but {chosen.description} is not; evaluate "
                          "them on data of their kind")
    missing = [n for n in names if n not in set(chosen.class_names)]
    loader = batches(chosen.dataset, batch_size, num_workers)
    if chosen.multi_label:
        metrics = evaluate(model, loader, dev, class_weights=chosen.class_weights)
        return EvalReport(chosen.description, metrics, names, None, missing)
    metrics, confusion, bad = _single_label(model, loader, dev, len(names))
    return EvalReport(chosen.description, metrics, names, confusion, missing, bad)


def agg_pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display), imported only to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(report: EvalReport, path: Path) -> Path:
    plt = agg_pyplot()
    conf = report.confusion
    n = len(report.class_names)
    rows = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)
    side = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class's images")
    if n <= 60:
        ticks = range(n)
        ax.set_xticks(ticks, report.class_names, rotation=90)
        ax.set_yticks(ticks, report.class_names)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"{report.data}: top-1 {100 * report.metrics['top1']:.2f}% "
                 f"({report.metrics['count']} images)")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def write_eval_report(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """``confusion_matrix.csv`` (rows: true class, columns: predicted), ``per_class.csv``
    (class, images, correct, top1) and ``confusion_matrix.png`` in ``out_dir``, each atomically.
    Multi-label data has no confusion matrix: nothing is written."""
    if report.confusion is None:
        return []
    out = Path(out_dir)
    names, conf = report.class_names, report.confusion

    def matrix(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted", *names])
            w.writerows([name, *map(int, row)] for name, row in zip(names, conf, strict=True))

    def per_class(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["class", "images", "correct", "top1"])
            w.writerows([c, n, k, f"{k / n:.6f}"] for c, n, k in report.per_class())

    return [atomic_write(out / "confusion_matrix.csv", matrix),
            atomic_write(out / "per_class.csv", per_class),
            _plot_confusion(report, out / "confusion_matrix.png")]
