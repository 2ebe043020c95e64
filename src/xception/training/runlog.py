"""What a run reports: log lines, a progress bar, metrics.jsonl/.csv, curves.png, TensorBoard.

Only rank 0 reports. Metric files are rewritten whole (atomically) after every epoch, so a run
that was killed and resumed ends with exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..files import atomic_write_text, printable
from .curves import plot_curves


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def check_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package "
                          "(pip install tensorboard)") from None


class RunLog:
    """Rank 0's reporting; on other ranks every method does nothing."""

    def __init__(self, out_dir: Path | None, log: Callable[[str], None], active: bool,
                 progress: bool, log_every: int, tensorboard: bool, title: str) -> None:
        self.out_dir, self.active, self.title = out_dir, active, title
        self._log = log if active else (lambda _: None)
        self.tty = progress and active and sys.stderr.isatty()
        self.lines = progress and active and not self.tty
        self.log_every = log_every
        self.writer = None
        if tensorboard and active and out_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.bar: tqdm | None = None
        self._t0 = time.perf_counter()
        self._seen = 0
        self._bad_shown = 0

    def __call__(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            self._log(message)

    def bad_images(self, bad: list[tuple[str, str]], limit: int = 10) -> None:
        """Name the first ``limit`` unreadable images of the run (the rest are only counted)."""
        for path, why in bad[:max(0, limit - self._bad_shown)]:
            self(printable(f"warning: skipped unreadable image {path} ({why})"))
        self._bad_shown += len(bad)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self._t0, self._seen = time.perf_counter(), 0
        if self.tty:
            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{epochs}",
                            unit="step", leave=False, file=sys.stderr)

    def step(self, epoch: int, step: int, steps: int, global_step: int, images: int,
             loss: float, lr: float) -> None:
        if not self.active:
            return
        self._seen += images
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}")
        elif self.lines and step % self.log_every == 0:
            rate = self._seen / max(time.perf_counter() - self._t0, 1e-9)
            self._log(f"epoch {epoch} step {step}/{steps}  loss {loss:.4f}  lr {lr:.4g}  "
                      f"{rate:.0f} img/s")
        if self.writer is not None and global_step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_row(self, row: dict[str, Any], history: list[dict]) -> None:
        if not self.active:
            return
        parts = [f"epoch {row['epoch']:>3}", f"train loss {row['train_loss']:.4f}",
                 f"val loss {row['val_loss']:.4f}", f"val top-1 {100 * row['val_top1']:.2f}%"]
        if "val_map100" in row:
            parts.append(f"MAP@100 {100 * row['val_map100']:.2f}%")
        if "ema_val_top1" in row:
            parts.append(f"EMA top-1 {100 * row['ema_val_top1']:.2f}%")
        parts.append(f"({row['epoch_seconds']:.1f} s, {row['train_img_per_s']:.0f} img/s, "
                     f"peak {row['peak_mem_mb']:.0f} MiB)")
        self._log("  ".join(parts))
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
            self.writer.flush()
        self.write_metrics(history)

    def write_metrics(self, history: list[dict], curves: bool = False) -> None:
        if not self.active or self.out_dir is None or not history:
            return
        atomic_write_text(self.out_dir / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in history))
        keys = list(dict.fromkeys(k for r in history for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())
        if curves:
            plot_curves(history, self.out_dir / "curves.png", self.title)

    def close(self) -> None:
        self.end_epoch()
        if self.writer is not None:
            self.writer.close()
