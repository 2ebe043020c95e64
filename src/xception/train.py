"""Training and evaluation as plain functions: ``train_one_epoch``, ``evaluate``, ``fit``.

No argument parsing here: the CLI builds a ``RunConfig`` and calls ``fit``; tests and experiments
call the same functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .config import OptimSection, RunConfig, ScheduleSection
from .data import DatasetInfo, build_datasets
from .errors import ConfigError
from .files import atomic_write_text
from .metrics import topk_correct
from .plots import plot_curves
from .registry import build_model, model_config
from .weights import save_weights


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; use auto, cpu or cuda[:N]") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA GPU is available; use cpu or auto")
    return device


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0, drop_last=False)


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm parameters and biases (1-d tensors), as usual for convnets."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, alpha=0.9, eps=1.0)


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleSection, total_steps: int,
                    peak_lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over ``total_steps``: linear warm-up then cosine decay, or constant."""
    sched = torch.optim.lr_scheduler
    if cfg.name == "cosine":
        warmup = min(max(1, round(cfg.warmup_fraction * total_steps)), total_steps)
        return sched.SequentialLR(opt, [
            sched.LinearLR(opt, start_factor=0.01, total_iters=warmup),
            sched.CosineAnnealingLR(opt, T_max=max(1, total_steps - warmup))], [warmup])
    return sched.ConstantLR(opt, factor=1.0, total_iters=0)


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device,
                    label_smoothing: float = 0.0, channels_last: bool = False,
                    progress: tqdm | None = None) -> dict[str, float]:
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=fmt)
        y = y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()}; lower optim.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        n = len(y)
        loss_sum += loss.item() * n
        correct += topk_correct(logits.detach(), y, (1,))[0]
        seen += n
        if progress is not None:
            progress.update(n)
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
    return {"train_loss": loss_sum / seen, "train_top1": correct / seen}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 over the whole loader."""
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, c1, c5, seen = 0.0, 0, 0, 0
    for x, y in loader:
        x = x.to(device, memory_format=fmt)
        y = y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        a, b = topk_correct(logits, y, (1, 5))
        c1, c5, seen = c1 + a, c5 + b, seen + len(y)
    return {"loss": loss_sum / seen, "top1": c1 / seen, "top5": c5 / seen, "count": seen}


@dataclass
class FitResult:
    model: nn.Module
    info: DatasetInfo
    history: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0

    @property
    def final(self) -> dict:
        return self.history[-1]


def prepare_out_dir(out_dir: Path) -> None:
    """A run folder must be new (or empty): results of two runs are never mixed."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"run folder {str(out_dir)!r} already holds files; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def fit(cfg: RunConfig, out_dir: str | Path | None = None,
        log: Callable[[str], None] = print) -> FitResult:
    """Train ``cfg.model`` on ``cfg.data``; write the run folder when ``out_dir`` is given."""
    tc = cfg.train
    if tc.epochs < 1 or tc.batch_size < 1:
        raise ConfigError(f"train.epochs and train.batch_size must be >= 1, got {tc.epochs} and "
                          f"{tc.batch_size}")
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    generator = seed_everything(tc.seed)
    train_ds, val_ds, info = build_datasets(cfg.data)
    mcfg = model_config(cfg.model.name, **{"num_classes": info.num_classes,
                                           "in_chans": info.preprocess.in_chans,
                                           **cfg.model.overrides})
    model = build_model(mcfg).to(device)
    if out_dir is not None:
        out_dir = Path(out_dir)
        prepare_out_dir(out_dir)
        atomic_write_text(out_dir / "config.json", cfg.to_json() + "\n")
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader = make_loader(train_ds, tc.batch_size, True, cfg.data.num_workers, generator)
    val_loader = make_loader(val_ds, 256, False, cfg.data.num_workers)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, tc.epochs * len(train_loader), cfg.optim.lr)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"training {cfg.model.name} ({n_params:,} parameters) on {cfg.data.name}: "
        f"{len(train_ds)} train / {len(val_ds)} val images, {tc.epochs} epochs, "
        f"batch {tc.batch_size}, {device}")
    result = FitResult(model, info, out_dir=out_dir)
    show = tc.progress and sys.stderr.isatty()
    start = time.perf_counter()
    for epoch in range(1, tc.epochs + 1):
        t0 = time.perf_counter()
        with tqdm(total=len(train_ds), desc=f"epoch {epoch}/{tc.epochs}", unit="img",
                  leave=False, disable=not show) as bar:
            stats = train_one_epoch(model, train_loader, opt, sched, device,
                                    cfg.optim.label_smoothing, tc.channels_last, bar)
        train_s = time.perf_counter() - t0
        val = evaluate(model, val_loader, device, tc.channels_last)
        row = {"epoch": epoch, **stats, "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "lr": opt.param_groups[0]["lr"],
               "train_img_per_s": len(train_ds) / train_s,
               "epoch_seconds": time.perf_counter() - t0}
        result.history.append(row)
        log(f"epoch {epoch:>3}/{tc.epochs}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  val top-1 {100 * row['val_top1']:.2f}%  "
            f"({row['epoch_seconds']:.1f} s, {row['train_img_per_s']:.0f} img/s)")
        if out_dir is not None:
            with open(out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        _write_csv(out_dir / "metrics.csv", result.history)
        plot_curves(result.history, out_dir / "curves.png",
                    f"{cfg.model.name} on {cfg.data.name}")
        save_weights(model, out_dir / "model.safetensors", list(info.class_names),
                     info.preprocess.to_dict(),
                     {"data_config": cfg.to_dict()["data"], "model_name": cfg.model.name,
                      "val_top1": result.final["val_top1"]})
    if not math.isfinite(result.final["val_loss"]):
        log("warning: the final validation loss is not finite")
    return result
