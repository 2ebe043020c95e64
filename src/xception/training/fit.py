"""``fit``: train a ``RunConfig`` end to end, on one CPU or many GPUs (torchrun), resumable exactly.

No argument parsing here: the CLI builds a ``RunConfig`` and calls ``fit``; tests and experiments
call the same function. A run is set up (data, model, ``TrainState``, ``Engine``), trained epoch
by epoch, and finished (weights, metrics). The pieces live next door: ``state`` (what a resume
restores), ``engine`` (one step), ``checkpoint`` (files), ``signals`` (stopping on SIGTERM),
``optimizers`` (LR rules), ``runlog`` (logs, metrics files, TensorBoard), and
``xception.distributed`` (torchrun) and ``xception.evaluation`` (the evaluation pass).
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
from torch.utils.data import DataLoader, Dataset

from ..allocator import keep_freed_memory
from ..data import DatasetInfo, EvalBatches, TrainBatches, build_datasets, make_loader
from ..data.loading import shutdown_workers
from ..distributed import DistContext, any_rank, barrier, broadcast_buffers, setup, teardown
from ..errors import ConfigError, DataError
from ..evaluation import autocast_dtype
from ..files import atomic_write_text
from ..models import build_model
from ..weights import save_weights
from .bn_stats import recalibration_loader
from .checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint
from .config import RunConfig
from .engine import Engine, make_ema, train_step
from .epoch import check_bad, epoch_row, record_step
from .optimizers import build_optimizer, build_scheduler, scaled_lr
from .runfolder import RunFolder
from .runlog import RunLog, check_tensorboard
from .signals import StopFlag
from .state import TrainState, warn_changed_settings

__all__ = ["FitResult", "fit", "seed_everything"]


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


def fit(cfg: RunConfig, out_dir: str | Path | None = None,
        log: Callable[[str], None] = print, resume: bool = False) -> FitResult:
    """Train ``cfg.model`` on ``cfg.data``; write the run folder when ``out_dir`` is given.

    Under torchrun every process calls ``fit``; rank 0 logs and writes files. With ``resume``
    the run continues from ``out_dir``'s checkpoint exactly where it stopped. Rank 0 locks
    ``out_dir`` for the whole run (``RunFolder``); a fresh run that fails before its first
    checkpoint removes what it wrote. The loaders' worker processes end with the run, however it
    ends (after the checkpoint of a stop request).
    """
    if cfg.train.tensorboard:
        check_tensorboard()
    if resume and out_dir is None:
        raise ConfigError("resume needs the run folder (out_dir)")
    out = Path(out_dir) if out_dir is not None else None
    ctx = setup(cfg.train.device, cfg.train.dist_backend)
    if ctx.device.type == "cpu":
        keep_freed_memory()
    folder = RunFolder(out, resume) if out is not None and ctx.is_main else None
    run: _Run | None = None
    done = False
    try:
        if folder is not None:
            folder.open()
        run = _Run.set_up(cfg, ctx, out, log, resume)
        with StopFlag() as stop:
            run.train(stop)
        result = run.finish()
        done = True
        return result
    finally:
        try:
            if run is not None:  # workers first: they share the folder's lock until they exit
                run.data.close()
        finally:
            if folder is not None:
                folder.close(failed=not done)
            teardown(ctx)


@dataclass
class _Data:
    """The training batches (this process's share of each global step) and the validation shard."""

    info: DatasetInfo
    sampler: TrainBatches
    train: DataLoader
    val: DataLoader
    recal: DataLoader | None = None  # train.bn_recalibration's fixed training batches

    @classmethod
    def build(cls, cfg: RunConfig, ctx: DistContext, train_ds: Dataset, val_ds: Dataset,
              info: DatasetInfo) -> _Data:
        tc, B, A, W = cfg.train, cfg.train.batch_size, cfg.train.accum_steps, ctx.world_size
        sampler = TrainBatches(len(train_ds), B, W, ctx.rank, A, seed=tc.seed)
        if sampler.steps_per_epoch == 0:
            raise DataError(f"{len(train_ds)} training images are too few for a global batch of {B} "
                            f"split {W * A} ways (each part needs >= 2 images)")
        loader_kw = {"num_workers": cfg.data.num_workers, "prefetch_factor": cfg.data.prefetch_factor}
        train = make_loader(train_ds, B, batch_sampler=sampler, **loader_kw)
        val = make_loader(val_ds, tc.eval_batch_size,
                          batch_sampler=EvalBatches(len(val_ds), tc.eval_batch_size, W, ctx.rank),
                          **loader_kw)
        recal = None
        if tc.bn_recalibration:  # each process's BatchNorm sees micro-batches of this size
            recal = recalibration_loader(train_ds, max(2, B // (W * A)), tc.bn_recalibration,
                                         tc.seed)
        return cls(info, sampler, train, val, recal)

    def close(self) -> None:
        """End the loaders' worker processes (persistent ones would outlive the run)."""
        for loader in (self.train, self.val):  # the recalibration loader has no workers
            shutdown_workers(loader)


@dataclass
class _Run:
    """One training run: ``set_up`` -> ``train`` (epochs) -> ``finish``."""

    cfg: RunConfig
    out_dir: Path | None
    eng: Engine
    data: _Data
    rl: RunLog
    interrupted: bool = False
    start: float = field(default_factory=time.perf_counter)

    @property
    def state(self) -> TrainState:
        return self.eng.state

    @property
    def ctx(self) -> DistContext:
        return self.eng.state.ctx

    @classmethod
    def set_up(cls, cfg: RunConfig, ctx: DistContext, out_dir: Path | None,
               log: Callable[[str], None], resume: bool) -> _Run:
        """Everything before the first step, in the order that fixes the random streams: seed,
        data, model init, per-rank seed, optimizer and schedule, then the resumed state."""
        tc = cfg.train  # validated when it was made: ranges, batch split, image size
        if tc.threads:
            torch.set_num_threads(tc.threads)
        say = log if ctx.is_main else (lambda _: None)
        ckpt = load_checkpoint(out_dir, warn=say) if resume else None  # fit checked a new folder
        seed_everything(tc.seed)
        train_ds, val_ds, info = _datasets(cfg, ctx)
        raw = _model(cfg, ctx, info, out_dir)
        torch.manual_seed(tc.seed + ctx.rank)  # dropout masks differ across processes
        data = _Data.build(cfg, ctx, train_ds, val_ds, info)
        lr = scaled_lr(cfg.optimizer, tc.batch_size)
        dtype = autocast_dtype(tc.precision, ctx.device)
        rl = RunLog(out_dir, log, ctx.is_main, tc.progress, tc.log_every, tc.tensorboard,
                    f"{cfg.model.name} on {cfg.data.name}")
        # said before the optimizer is built: the first torch.optim optimizer imports
        # torch._dynamo (~1.5 s on a 2-core CPU), and the user should not wait for it in silence
        rl(_intro(cfg, ctx, raw, data, lr, dtype, ckpt))
        state = _train_state(cfg, ctx, raw, data.sampler, lr, dtype)
        if ckpt is not None:
            warn_changed_settings(ckpt["config"], cfg, say)
            state.load_state_dict(ckpt, warn=say)
        eng = _engine(cfg, state, info, dtype)
        return cls(cfg, out_dir, eng, data, rl)

    def train(self, stop: StopFlag) -> None:
        """Epoch after epoch until the last, the step budget, or a stop request (then saved)."""
        tc = self.cfg.train
        for epoch in range(self.state.progress.epoch, tc.epochs + 1):
            p = self.state.progress
            if tc.max_steps and p.global_step >= tc.max_steps:
                break
            self.data.sampler.set_epoch(epoch, p.step_in_epoch)
            self.rl.start_epoch(epoch, tc.epochs, self.data.sampler.steps_per_epoch, p.step_in_epoch)
            t0, images0 = time.perf_counter(), p.seen
            if self.ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.ctx.device)
            stopped = self._steps(epoch, stop)
            self.rl.end_epoch()
            if stopped:
                self._checkpoint()
                self._interrupted(f"stopped by a signal at epoch {epoch} step {p.step_in_epoch}")
                break
            self._end_epoch(epoch, t0, p.seen - images0)
            if any_rank(self.ctx, [stop.is_set])[0]:
                self._interrupted(f"stopped by signal after epoch {epoch}")
                break

    def _steps(self, epoch: int, stop: StopFlag) -> bool:
        """The epoch's optimizer steps from where it stands; True if a signal asked to stop."""
        tc, p, sampler = self.cfg.train, self.state.progress, self.data.sampler
        spe, W = sampler.steps_per_epoch, self.ctx.world_size
        batches = iter(self.data.train)
        for t in range(p.step_in_epoch, spe):
            micros = [next(batches) for _ in range(tc.accum_steps)]
            res = train_step(self.eng, micros, sampler.step_size(t), stop.is_set)
            p.step_in_epoch, p.global_step = t + 1, p.global_step + 1
            record_step(p, res, self.rl, self.cfg)
            if not res.skipped:
                self.rl.step(epoch, t + 1, spe, p.global_step, res.seen * W,
                             res.loss_sum / max(res.seen, 1),
                             self.state.optimizer.param_groups[0]["lr"])
            if res.stop:
                return True
            if tc.checkpoint_every and p.global_step % tc.checkpoint_every == 0 and t + 1 < spe:
                self._checkpoint()
            if tc.max_steps and p.global_step >= tc.max_steps:
                break
        return False

    def _end_epoch(self, epoch: int, t0: float, images_here: float) -> None:
        """Evaluate, check the unreadable-image budget, report, move on, checkpoint."""
        train_s = time.perf_counter() - t0
        row = epoch_row(self.eng, self.data.val, self.data.info, epoch, train_s, images_here,
                        self.data.recal)
        row["epoch_seconds"] = time.perf_counter() - t0  # training + evaluation
        for split in ("train", "val"):
            check_bad(row[f"{split}_bad"], row[f"{split}_bad"] + row[f"{split}_count"],
                      self.cfg.data.max_bad_fraction, True)
        self.state.history.append(row)
        self.rl.epoch_row(row, self.state.history)
        self.state.progress.new_epoch()
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the state (every process takes part; rank 0 writes), unless it is not finite."""
        if self.out_dir is None:
            return
        p = self.state.progress
        finite = all(bool(torch.isfinite(q).all()) for q in self.state.model.parameters())
        if p.nonfinite_streak or any_rank(self.ctx, [not finite])[0]:
            self.rl(f"warning: step {p.global_step}: losses or weights are not finite; keeping "
                    "the last good checkpoint")
            return
        state = self.state.state_dict()
        if self.ctx.is_main:
            save_checkpoint(self.out_dir, {"config": self.cfg.to_json(), **state})
        barrier(self.ctx)

    def _interrupted(self, why: str) -> None:
        self.rl(f"{why}; resume with: xception train --resume {self.out_dir}")
        self.interrupted = True

    def finish(self) -> FitResult:
        """Give every rank rank 0's buffers; rank 0 writes metrics and the final weights."""
        seconds = time.perf_counter() - self.start
        st, ctx, out_dir = self.state, self.ctx, self.out_dir
        broadcast_buffers(ctx, st.model)
        if st.ema is not None:
            broadcast_buffers(ctx, st.ema.module)
        if out_dir is not None and ctx.is_main and st.history:
            self.rl.write_metrics(st.history, curves=True)
            if not self.interrupted:
                _save_weights(out_dir, self.cfg, self.data.info, st.model, st.ema, st.history[-1])
                # finished: the newest checkpoint is good, so the fallback goes (and it, if asked)
                (out_dir / PREVIOUS).unlink(missing_ok=True)
                if not self.cfg.train.keep_checkpoint:
                    (out_dir / CHECKPOINT).unlink(missing_ok=True)
        self.rl.close()
        barrier(ctx)
        return FitResult(st.model, self.data.info, st.history, out_dir, seconds, self.interrupted,
                         ema_model=st.ema.module if st.ema is not None else None,
                         global_step=st.progress.global_step)


def _datasets(cfg: RunConfig, ctx: DistContext) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Training and validation sets and their description (rank 0 downloads first)."""
    if cfg.data.download and not ctx.is_main:
        barrier(ctx)  # rank 0 downloads first
    train_ds, val_ds, info = build_datasets(cfg.data, cfg.train.seed)
    if cfg.data.download and ctx.is_main:
        barrier(ctx)
    if info.multi_label and cfg.optimizer.label_smoothing:
        raise ConfigError("optimizer.label_smoothing applies to single-label data only")
    return train_ds, val_ds, info


def _model(cfg: RunConfig, ctx: DistContext, info: DatasetInfo, out_dir: Path | None) -> nn.Module:
    """The freshly initialised model; once it and the data are fine, the run folder starts."""
    mcfg = cfg.model.for_data(info.num_classes, info.preprocess.in_chans)
    for key, have, what in (("num_classes", info.num_classes, f"{info.num_classes} classes"),
                            ("in_chans", info.preprocess.in_chans,
                             f"{info.preprocess.in_chans}-channel images")):
        if getattr(mcfg, key) != have:  # a head or stem that does not fit: refused before any step
            raise ConfigError(f"model.{key}={getattr(mcfg, key)} but the data ({cfg.data.name}) "
                              f"has {what}; leave model.{key} unset (it follows the data)")
    raw = build_model(mcfg).to(ctx.device)
    if out_dir is not None and ctx.is_main:  # the data and the model are fine: start the folder
        atomic_write_text(out_dir / "config.json", cfg.to_json() + "\n")
    if cfg.train.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    return raw


def _train_state(cfg: RunConfig, ctx: DistContext, raw: nn.Module, sampler: TrainBatches, lr: float,
                 dtype: torch.dtype | None) -> TrainState:
    """A fresh state: optimizer, per-step LR schedule over the run's step budget, scaler, EMA."""
    tc, spe = cfg.train, sampler.steps_per_epoch
    total_steps = tc.epochs * spe if not tc.max_steps else min(tc.epochs * spe, tc.max_steps)
    opt = build_optimizer(raw, cfg.optimizer, lr)
    sched = build_scheduler(opt, cfg.schedule, total_steps, steps_per_epoch=spe, batch=tc.batch_size,
                            epoch_samples=sampler.epoch_samples)
    scaler = torch.amp.GradScaler(ctx.device.type) if dtype == torch.float16 else None
    ema = make_ema(raw, tc.ema_decay) if tc.ema else None
    return TrainState(model=raw, optimizer=opt, scheduler=sched, scaler=scaler, ema=ema, ctx=ctx)


def _engine(cfg: RunConfig, state: TrainState, info: DatasetInfo, dtype: torch.dtype | None) -> Engine:
    """Wrap the (restored) model for DDP and ``torch.compile`` as asked; add the step settings."""
    ctx, tc, size = state.ctx, cfg.train, cfg.data.image_size
    ddp = None
    if ctx.enabled:
        ddp = DistributedDataParallel(state.model, device_ids=[ctx.device.index]
                                      if ctx.device.type == "cuda" else None)
    step_model: nn.Module = ddp if ddp is not None else state.model
    if tc.compile:
        step_model = torch.compile(step_model)
    return Engine(state=state, step_model=step_model, ddp=ddp, dtype=dtype,
                  channels_last=tc.channels_last, label_smoothing=cfg.optimizer.label_smoothing,
                  clip_grad_norm=cfg.optimizer.clip_grad_norm,
                  input_shape=(info.preprocess.in_chans, size, size), multi_label=info.multi_label,
                  num_classes=info.num_classes)


def _intro(cfg: RunConfig, ctx: DistContext, model: nn.Module, data: _Data, lr: float,
           dtype: torch.dtype | None, ckpt: dict | None) -> str:
    tc = cfg.train
    B, A, W = tc.batch_size, tc.accum_steps, ctx.world_size
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    at = ckpt["progress"] if ckpt is not None else None
    return (f"training {cfg.model.name} ({n_params:,} parameters) on {cfg.data.name}: "
            f"{len(data.train.dataset)} train / {len(data.val.dataset)} val images, {tc.epochs} "
            f"epochs x {data.sampler.steps_per_epoch} steps, global batch {B} ({W} process(es) x "
            f"{A} micro-batch(es) of {B // (W * A)}), lr {lr:.4g}, {ctx.device}, {precision}"
            + (f", resuming at epoch {at['epoch']} step {at['step_in_epoch']}" if at else ""))


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
