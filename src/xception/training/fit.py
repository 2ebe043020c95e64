"""``fit``: train a ``RunConfig`` end to end, on one CPU or many GPUs (torchrun), resumable exactly.

No argument parsing here: the CLI builds a ``RunConfig`` and calls ``fit``; tests and experiments
call the same function. The pieces live next door: ``engine`` (one step, evaluation),
``optimizers`` (LR rules), ``checkpoint`` (files, RNG, signals), ``runstate`` (what a resume
restores), ``distributed`` (torchrun), ``runlog`` (logs, metrics files, TensorBoard).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import DatasetInfo, EvalBatches, TrainBatches, build_datasets, make_loader
from ..distributed import (
    DistContext,
    all_sum,
    any_rank,
    barrier,
    broadcast_buffers,
    resolve_device,
    setup,
    teardown,
)
from ..errors import ConfigError, DataError, TrainingError
from ..evaluation import autocast_dtype, evaluate
from ..files import atomic_write_text
from ..models.registry import build_model, model_config
from ..weights import save_weights
from .checkpoint import CHECKPOINT, PREVIOUS, StopFlag, load_checkpoint
from .config import RunConfig, validate
from .engine import Engine, StepResult, make_ema, train_step
from .optimizers import build_optimizer, build_scheduler, scaled_lr
from .runlog import RunLog, check_tensorboard, peak_memory_mb
from .state import Progress, restore_run, save_run

__all__ = ["FitResult", "build_optimizer", "build_scheduler", "evaluate", "fit", "make_loader",
           "resolve_device", "seed_everything", "train_step"]


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class FitResult:
    model: nn.Module                  # the trained (raw) weights
    info: DatasetInfo
    history: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0
    interrupted: bool = False         # stopped by SIGTERM/SIGINT after saving a checkpoint
    ema_model: nn.Module | None = None
    global_step: int = 0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def prepare_out_dir(out_dir: Path, create: bool = True) -> None:
    """A run folder must be new (or empty): results of two runs are never mixed."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"run folder {str(out_dir)!r} already holds files; choose another --out "
                          "(or --resume it)")
    if create:
        out_dir.mkdir(parents=True, exist_ok=True)


def fit(cfg: RunConfig, out_dir: str | Path | None = None,
        log: Callable[[str], None] = print, resume: bool = False) -> FitResult:
    """Train ``cfg.model`` on ``cfg.data``; write the run folder when ``out_dir`` is given.

    Under torchrun every process calls ``fit``; rank 0 logs and writes files. With ``resume``
    the run continues from ``out_dir``'s checkpoint exactly where it stopped.
    """
    validate(cfg)
    if cfg.train.tensorboard:
        check_tensorboard()
    if resume and out_dir is None:
        raise ConfigError("resume needs the run folder (out_dir)")
    ctx = setup(cfg.train.device, cfg.train.dist_backend)
    try:
        return _fit(cfg, ctx, Path(out_dir) if out_dir is not None else None, log, resume)
    finally:
        teardown(ctx)


def _fit(cfg: RunConfig, ctx: DistContext, out_dir: Path | None, log: Callable[[str], None],
         resume: bool) -> FitResult:
    tc, device = cfg.train, ctx.device
    if tc.batch_size % (ctx.world_size * tc.accum_steps):
        raise ConfigError(f"train.batch_size={tc.batch_size} (global) must be divisible by "
                          f"{ctx.world_size} processes x train.accum_steps={tc.accum_steps}")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    say = log if ctx.is_main else (lambda _: None)
    ckpt = load_checkpoint(out_dir, warn=say) if resume else None
    if out_dir is not None and ckpt is None and ctx.is_main:
        prepare_out_dir(out_dir, create=False)
    seed_everything(tc.seed)
    if cfg.data.download and not ctx.is_main:
        barrier(ctx)  # rank 0 downloads first
    train_ds, val_ds, info = build_datasets(cfg.data, tc.seed)
    if cfg.data.download and ctx.is_main:
        barrier(ctx)
    if info.multi_label and cfg.optimizer.label_smoothing:
        raise ConfigError("optimizer.label_smoothing applies to single-label data only")
    mcfg = model_config(cfg.model.name, **{"num_classes": info.num_classes,
                                           "in_chans": info.preprocess.in_chans,
                                           **cfg.model.overrides})
    raw = build_model(mcfg).to(device)
    if out_dir is not None and ctx.is_main:  # the data and the model are fine: start the folder
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", cfg.to_json() + "\n")
    if tc.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    torch.manual_seed(tc.seed + ctx.rank)  # dropout masks differ across processes
    B, A, W = tc.batch_size, tc.accum_steps, ctx.world_size
    sampler = TrainBatches(len(train_ds), B, W, ctx.rank, A, seed=tc.seed)
    if sampler.steps_per_epoch == 0:
        raise DataError(f"{len(train_ds)} training images are too few for a global batch of {B} "
                        f"split {W * A} ways (each part needs >= 2 images)")
    loader_kw = {"num_workers": cfg.data.num_workers, "prefetch_factor": cfg.data.prefetch_factor}
    train_loader = make_loader(train_ds, B, batch_sampler=sampler, **loader_kw)
    val_loader = make_loader(val_ds, tc.eval_batch_size,
                             batch_sampler=EvalBatches(len(val_ds), tc.eval_batch_size, W, ctx.rank),
                             **loader_kw)
    spe = sampler.steps_per_epoch
    total_steps = tc.epochs * spe if not tc.max_steps else min(tc.epochs * spe, tc.max_steps)
    lr = scaled_lr(cfg.optimizer, B)
    opt = build_optimizer(raw, cfg.optimizer, lr)
    sched = build_scheduler(opt, cfg.schedule, total_steps, steps_per_epoch=spe, batch=B,
                            epoch_samples=sampler.epoch_samples)
    dtype = autocast_dtype(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    ema = make_ema(raw, tc.ema_decay) if tc.ema else None
    state, history = Progress(), []
    if ckpt is not None:
        state, history = restore_run(ckpt, cfg, ctx, raw, opt, sched, scaler, ema, say)
    ddp = None
    if ctx.enabled:
        ddp = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda"
                                      else None)
    step_model: nn.Module = ddp if ddp is not None else raw
    if tc.compile:
        step_model = torch.compile(step_model)
    eng = Engine(step_model, raw, opt, sched, device, ctx, dtype, scaler, ema, ddp,
                 tc.channels_last, cfg.optimizer.label_smoothing, cfg.optimizer.clip_grad_norm,
                 (info.preprocess.in_chans, cfg.data.image_size, cfg.data.image_size))
    title = f"{cfg.model.name} on {cfg.data.name}"
    rl = RunLog(out_dir, log, ctx.is_main, tc.progress, tc.log_every, tc.tensorboard, title)
    n_params = sum(p.numel() for p in raw.parameters() if p.requires_grad)
    rl(f"training {cfg.model.name} ({n_params:,} parameters) on {cfg.data.name}: "
       f"{len(train_ds)} train / {len(val_ds)} val images, {tc.epochs} epochs x {spe} steps, "
       f"global batch {B} ({W} process(es) x {A} micro-batch(es) of {B // (W * A)}), lr {lr:.4g}, "
       f"{device}, {str(dtype).replace('torch.', '') if dtype else 'fp32'}"
       + (f", resuming at epoch {state.epoch} step {state.step_in_epoch}" if ckpt else ""))
    result = FitResult(raw, info, history, out_dir, ema_model=ema.module if ema else None)
    start = time.perf_counter()

    def checkpoint() -> None:
        if out_dir is None:
            return
        finite = all(bool(torch.isfinite(p).all()) for p in raw.parameters())
        if state.nonfinite_streak or any_rank(ctx, [not finite])[0]:
            rl(f"warning: step {state.global_step}: losses or weights are not finite; keeping "
               "the last good checkpoint")
            return
        save_run(out_dir, cfg, ctx, eng, state, history)

    with StopFlag() as stop:
        for epoch in range(state.epoch, tc.epochs + 1):
            if tc.max_steps and state.global_step >= tc.max_steps:
                break
            sampler.set_epoch(epoch, state.step_in_epoch)
            rl.start_epoch(epoch, tc.epochs, spe, state.step_in_epoch)
            t0, images0 = time.perf_counter(), state.seen
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            batches, stopped = iter(train_loader), False
            for t in range(state.step_in_epoch, spe):
                micros = [next(batches) for _ in range(A)]
                res = train_step(eng, micros, sampler.step_size(t), stop.is_set, info.multi_label,
                                 info.num_classes)
                state.step_in_epoch, state.global_step = t + 1, state.global_step + 1
                _record_step(state, res, rl, cfg)
                if not res.skipped:
                    rl.step(epoch, t + 1, spe, state.global_step, res.seen * W,
                            res.loss_sum / max(res.seen, 1), opt.param_groups[0]["lr"])
                if res.stop:
                    stopped = True
                    break
                if tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0 \
                        and t + 1 < spe:
                    checkpoint()
                if tc.max_steps and state.global_step >= tc.max_steps:
                    break
            rl.end_epoch()
            if stopped:
                checkpoint()
                rl(f"stopped by a signal at epoch {epoch} step {state.step_in_epoch}; resume "
                   f"with: xception train --resume {out_dir}")
                result.interrupted = True
                break
            train_s = time.perf_counter() - t0
            row = _epoch_row(cfg, eng, val_loader, info, state, epoch, train_s,
                             state.seen - images0)
            row["epoch_seconds"] = time.perf_counter() - t0  # training + evaluation
            for split in ("train", "val"):
                _check_bad(row[f"{split}_bad"], row[f"{split}_bad"] + row[f"{split}_count"],
                           cfg.data.max_bad_fraction, True)
            history.append(row)
            rl.epoch_row(row, history)
            state.new_epoch()
            checkpoint()
            if any_rank(ctx, [stop.is_set])[0]:
                rl(f"stopped by signal after epoch {epoch}; resume with: "
                   f"xception train --resume {out_dir}")
                result.interrupted = True
                break
    result.seconds = time.perf_counter() - start
    result.global_step = state.global_step
    broadcast_buffers(ctx, raw)
    if ema is not None:
        broadcast_buffers(ctx, ema.module)
    if out_dir is not None and ctx.is_main and history:
        rl.write_metrics(history, curves=True)
        if not result.interrupted:
            _save_weights(out_dir, cfg, info, raw, ema, history[-1])
            # finished: the newest checkpoint is good, so the fallback goes (and it, if asked)
            (out_dir / PREVIOUS).unlink(missing_ok=True)
            if not tc.keep_checkpoint:
                (out_dir / CHECKPOINT).unlink(missing_ok=True)
    rl.close()
    barrier(ctx)
    return result


def _record_step(state: Progress, res: StepResult, rl: RunLog, cfg: RunConfig) -> None:
    """Add a step's sums to the epoch's; report skipped images and non-finite losses, and stop
    when there are too many of either."""
    if not res.skipped:
        state.loss_sum += res.loss_sum
        state.correct += res.correct
        state.seen += res.seen
    state.bad += len(res.bad)
    rl.bad_images(res.bad)
    _check_bad(state.bad, state.seen + state.bad, cfg.data.max_bad_fraction, False)
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


def _check_bad(bad: float, total: float, limit: float, final: bool) -> None:
    """Abort when too many images are unreadable (checked once 1,000 were read, and per epoch)."""
    if bad and (final or total >= 1000) and bad / max(total, 1) > limit:
        raise DataError(f"{int(bad)} of {int(total)} images ({100 * bad / total:.1f}%) are "
                        f"unreadable, more than data.max_bad_fraction={limit}; fix or remove them "
                        "(the log names the first ones) or raise the limit")


def _epoch_row(cfg: RunConfig, eng: Engine, val_loader, info: DatasetInfo, state: Progress,
               epoch: int, train_s: float, images_here: float) -> dict:
    ctx = eng.ctx
    loss_sum, correct, seen, bad, skipped = all_sum(ctx, state.sums())
    images_here = all_sum(ctx, [images_here])[0]
    broadcast_buffers(ctx, eng.raw)  # every rank evaluates rank 0's BatchNorm statistics
    kw = {"ctx": ctx, "dtype": eng.dtype, "class_weights": info.class_weights}
    val = evaluate(eng.raw, val_loader, eng.device, eng.channels_last, **kw)
    row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
           "train_top1": correct / max(seen, 1), "val_loss": val["loss"], "val_top1": val["top1"],
           "val_top5": val["top5"]}
    if info.multi_label:
        row |= {"val_map100": val["map100"], "val_map": val["map"]}
    if eng.ema is not None:
        broadcast_buffers(ctx, eng.ema.module)
        ev = evaluate(eng.ema.module, val_loader, eng.device, eng.channels_last, **kw)
        row |= {f"ema_val_{k}": ev[k] for k in ("loss", "top1", "top5", "map100", "map") if k in ev}
    return row | {"lr": eng.opt.param_groups[0]["lr"], "steps": state.global_step,
                  "train_img_per_s": images_here / max(train_s, 1e-9),
                  "epoch_seconds": train_s, "peak_mem_mb": peak_memory_mb(eng.device),
                  "train_count": int(seen), "train_bad": int(bad), "val_count": val["count"],
                  "val_bad": val["bad"],
                  "skipped_steps": int(skipped)}


def _save_weights(out_dir: Path, cfg: RunConfig, info: DatasetInfo, raw: nn.Module, ema,
                  final: dict) -> None:
    """``model.safetensors``: the weights evaluation uses (the EMA when on; raw ones beside)."""
    meta = {"data_config": cfg.to_dict()["data"], "model_name": cfg.model.name,
            "multi_label": info.multi_label}
    args = (list(info.class_names), info.preprocess.to_dict())
    if ema is not None:
        save_weights(ema.module, out_dir / "model.safetensors", *args,
                     meta | {"weights": "ema", "val_top1": final.get("ema_val_top1")})
        save_weights(raw, out_dir / "model_raw.safetensors", *args,
                     meta | {"weights": "raw", "val_top1": final.get("val_top1")})
    else:
        save_weights(raw, out_dir / "model.safetensors", *args,
                     meta | {"weights": "raw", "val_top1": final.get("val_top1")})
