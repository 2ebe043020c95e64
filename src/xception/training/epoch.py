"""One epoch's bookkeeping: each step's sums into ``Progress``, the unreadable-image budget,
and the epoch's metrics row (training sums over all processes, then validation)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from ..data import DatasetInfo
from ..distributed import all_sum, broadcast_buffers
from ..errors import DataError, TrainingError
from ..evaluation import evaluate
from .bn_stats import recalibrate
from .config import RunConfig
from .engine import Engine, StepResult
from .runlog import RunLog, peak_memory_mb
from .state import Progress


def record_step(state: Progress, res: StepResult, rl: RunLog, cfg: RunConfig) -> None:
    """Add a step's sums to the epoch's; report skipped images and non-finite losses, and stop
    when there are too many of either."""
    if not res.skipped:
        state.loss_sum += res.loss_sum
        state.correct += res.correct
        state.seen += res.seen
    state.bad += len(res.bad)
    rl.bad_images(res.bad)
    check_bad(state.bad, state.seen + state.bad, cfg.data.max_bad_fraction, False)
    if not res.skipped:
        state.nonfinite_streak = 0
        return
    state.skipped += 1
    state.nonfinite_streak += 1
    rl(f"warning: step {state.global_step}: loss is not finite; update skipped "
       f"({state.nonfinite_streak} in a row)")
    if state.nonfinite_streak >= cfg.train.max_nonfinite:
        raise TrainingError(f"{state.nonfinite_streak} non-finite losses in a row at step "
                            f"{state.global_step}; stopping (the last good checkpoint is kept). "
                            "Lower optimizer.lr or use train.precision=fp32/bf16.")


def check_bad(bad: float, total: float, limit: float, final: bool) -> None:
    """Abort when too many images are unreadable (checked once 1,000 were read, and per epoch)."""
    if bad and (final or total >= 1000) and bad / max(total, 1) > limit:
        raise DataError(f"{int(bad)} of {int(total)} images ({100 * bad / total:.1f}%) are "
                        f"unreadable, more than data.max_bad_fraction={limit}; fix or remove them "
                        "(the log names the first ones) or raise the limit")


def epoch_row(eng: Engine, val_loader: DataLoader, info: DatasetInfo, epoch: int, train_s: float,
              images_here: float, recal_loader: DataLoader | None = None) -> dict:
    """The epoch's metrics row: training sums over all processes, then validation (raw, EMA);
    with ``recal_loader`` the BatchNorm statistics are first recomputed from its batches."""
    st = eng.state
    ctx, p = st.ctx, st.progress
    loss_sum, correct, seen, bad, skipped = all_sum(ctx, p.sums())
    images_here = all_sum(ctx, [images_here])[0]
    if recal_loader is not None:
        for net in (st.model, *((st.ema.module,) if st.ema is not None else ())):
            recalibrate(net, recal_loader, epoch, eng.device, eng.memory_format, eng.dtype)
    broadcast_buffers(ctx, st.model)  # every rank evaluates rank 0's BatchNorm statistics
    kw = {"ctx": ctx, "dtype": eng.dtype, "class_weights": info.class_weights}
    val = evaluate(st.model, val_loader, eng.device, eng.channels_last, **kw)
    row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
           "train_top1": correct / max(seen, 1), "val_loss": val["loss"], "val_top1": val["top1"],
           "val_top5": val["top5"]}
    if info.multi_label:
        row |= {"val_map100": val["map100"], "val_map": val["map"]}
    if st.ema is not None:
        broadcast_buffers(ctx, st.ema.module)
        ev = evaluate(st.ema.module, val_loader, eng.device, eng.channels_last, **kw)
        row |= {f"ema_val_{k}": ev[k] for k in ("loss", "top1", "top5", "map100", "map") if k in ev}
    return row | {"lr": st.optimizer.param_groups[0]["lr"], "steps": p.global_step,
                  "train_img_per_s": images_here / max(train_s, 1e-9),
                  "epoch_seconds": train_s, "peak_mem_mb": peak_memory_mb(eng.device),
                  "train_count": int(seen), "train_bad": int(bad), "val_count": val["count"],
                  "val_bad": val["bad"],
                  "skipped_steps": int(skipped)}
