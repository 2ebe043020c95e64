"""One epoch's bookkeeping: each step's sums into ``Progress``, the unreadable-image budget,
and the epoch's metrics row (training sums over all processes, then validation)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data import DatasetInfo
from ..distributed import all_sum, broadcast_buffers
from ..errors import DataError, TrainingError
from ..evaluation import evaluate
from .bn_stats import recalibrate
from .engine import Engine, StepResult
from .runlog import RunLog, peak_memory_mb
from .state import Progress


def record_step(progress: Progress, result: StepResult, run_log: RunLog, cfg: RunConfig) -> None:
    """Add a step's sums to the epoch's; report skipped images and non-finite losses, and stop
    when there are too many of either."""
    if not result.skipped:
        progress.loss_sum += result.loss_sum
        progress.correct += result.correct
        progress.seen += result.seen
    progress.bad += len(result.bad)
    run_log.bad_images(result.bad)
    check_bad(progress.bad, progress.seen + progress.bad, cfg.data.max_bad_fraction, False)
    if not result.skipped:
        progress.nonfinite_streak = 0
        return
    progress.skipped += 1
    progress.nonfinite_streak += 1
    run_log(f"warning: step {progress.global_step}: loss is not finite; update skipped "
            f"({progress.nonfinite_streak} in a row)")
    if progress.nonfinite_streak >= cfg.train.max_nonfinite:
        raise TrainingError(f"{progress.nonfinite_streak} non-finite losses in a row at step "
                            f"{progress.global_step}; stopping (the last good checkpoint is kept). "
                            "Lower optimizer.lr or use train.precision=fp32/bf16.")


def check_bad(bad: float, total: float, limit: float, final: bool) -> None:
    """Abort when too many images are unreadable (checked once 1,000 were read, and per epoch)."""
    if bad and (final or total >= 1000) and bad / max(total, 1) > limit:
        raise DataError(f"{int(bad)} of {int(total)} images ({100 * bad / total:.1f}%) are "
                        f"unreadable, more than data.max_bad_fraction={limit}; fix or remove them "
                        "(the log names the first ones) or raise the limit")


def epoch_row(engine: Engine, val_loader: DataLoader, info: DatasetInfo, epoch: int, train_s: float,
              images_here: float, recal_loader: DataLoader | None = None) -> dict:
    """The epoch's metrics row: training sums over all processes, then validation (raw, EMA);
    with ``recal_loader`` the BatchNorm statistics are first recomputed from its batches."""
    train_state = engine.state
    ctx, progress = train_state.ctx, train_state.progress
    loss_sum, correct, seen, bad, skipped = all_sum(ctx, progress.sums())
    images_here = all_sum(ctx, [images_here])[0]
    if recal_loader is not None:
        ema = (train_state.ema.module,) if train_state.ema is not None else ()
        for net in (train_state.model, *ema):
            recalibrate(net, recal_loader, epoch, engine.device, engine.memory_format, engine.dtype)
    broadcast_buffers(ctx, train_state.model)  # every rank evaluates rank 0's BatchNorm statistics
    scores, val = split_scores(engine, val_loader, info, "val")
    row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
           "train_top1": correct / max(seen, 1), **scores}
    return row | {"lr": train_state.optimizer.param_groups[0]["lr"], "steps": progress.global_step,
                  "train_img_per_s": images_here / max(train_s, 1e-9),
                  "epoch_seconds": train_s, "peak_mem_mb": peak_memory_mb(engine.device),
                  "train_count": int(seen), "train_bad": int(bad), "val_count": val["count"],
                  "val_bad": val["bad"],
                  "skipped_steps": int(skipped)}


def split_scores(engine: Engine, loader: DataLoader, info: DatasetInfo, split: str
                 ) -> tuple[dict, dict]:
    """``{split}_loss/top1/top5`` (and MAP@100 / mAP for multi-label data), then the EMA's as
    ``ema_{split}_...``; and the raw weights' whole evaluation (counts of read and bad images).
    Every process takes part (the sums are all-reduced)."""
    train_state = engine.state
    kw = {"ctx": train_state.ctx, "dtype": engine.dtype, "class_weights": info.class_weights}
    raw = evaluate(train_state.model, loader, engine.device, engine.channels_last, **kw)
    scores = {f"{split}_{k}": raw[k] for k in ("loss", "top1", "top5")}
    if info.multi_label:
        scores |= {f"{split}_map100": raw["map100"], f"{split}_map": raw["map"]}
    if train_state.ema is not None:
        broadcast_buffers(train_state.ctx, train_state.ema.module)
        ema = evaluate(train_state.ema.module, loader, engine.device, engine.channels_last, **kw)
        scores |= {f"ema_{split}_{k}": ema[k] for k in ("loss", "top1", "top5", "map100", "map")
                   if k in ema}
    return scores, raw
