"""``fit``: train a ``RunConfig`` end to end, on one CPU or many GPUs (torchrun), resumable exactly.

No argument parsing here: the CLI builds a ``RunConfig`` and calls ``fit``; tests and experiments
call the same function. A run is set up (data, model, ``TrainState``, ``Engine``), trained epoch
by epoch, and finished (weights, metrics). The pieces live next door: ``assembly`` (the model,
a fresh state, the engine), ``batches`` (datasets and loaders), ``state`` (what a resume
restores), ``engine`` (one step), ``checkpoint`` (files), ``signals`` (stopping on SIGTERM),
``membership`` (resumed on another number of processes), ``sync_bn`` (BatchNorm over the global
batch), ``optimizers`` (LR rules), ``runlog`` (logs, metrics files, TensorBoard), ``runfolder``
(the folder's lock, config.json, clean-up), and ``xception.distributed`` (torchrun) and
``xception.evaluation`` (the evaluation pass).
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

from ..allocator import keep_freed_memory
from ..config import RunConfig, fit_to_data
from ..config.loader import section_dict
from ..data import DatasetInfo
from ..distributed import (
    DistContext,
    any_rank,
    barrier,
    broadcast_buffers,
    restart_advice,
    setup,
    teardown,
)
from ..errors import ConfigError
from ..evaluation import autocast_dtype
from ..weights import save_weights
from ..weights.load import Source
from .assembly import fresh_state, make_engine, run_model
from .batches import RunData, build_run_splits
from .checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, save_checkpoint
from .engine import Engine, train_step
from .epoch import check_bad, epoch_row, record_step, split_scores
from .freezing import freeze
from .membership import keep_micro_batch
from .optimizers import scaled_lr
from .phases import enter_phase_two
from .pretrained import load_pretrained, read_init, with_source_numerics
from .runfolder import RunFolder
from .runlog import RunLog, check_tensorboard
from .signals import StopFlag
from .state import TrainState, warn_changed_settings
from .sync_bn import synchronise_batch_norm

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
    init = None
    if cfg.train.init and not resume:  # a resumed run has its weights (and numerics) already
        init = read_init(cfg.train.init)  # a bad file fails before any folder is made
        cfg = with_source_numerics(cfg, init)
    ctx = setup(cfg.train.device, cfg.train.dist_backend)
    if ctx.device.type == "cpu":
        keep_freed_memory()
    folder = RunFolder(out, resume) if out is not None and ctx.is_main else None
    run: _Run | None = None
    done = False
    try:
        if folder is not None:
            folder.open()
        run = _Run.set_up(cfg, ctx, out, log, resume, init)
        if folder is not None:  # the data, the model and any checkpoint are fine
            folder.write_config(run.cfg.to_json())
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
class _Run:
    """One training run: ``set_up`` -> ``train`` (epochs) -> ``finish``."""

    cfg: RunConfig
    out_dir: Path | None
    engine: Engine
    data: RunData
    log: RunLog                       # the one logger: rank 0 reports, the others stay silent
    interrupted: bool = False
    start: float = field(default_factory=time.perf_counter)
    saved_at: float = field(default_factory=time.perf_counter)  # train.checkpoint_every_s

    @property
    def state(self) -> TrainState:
        return self.engine.state

    @property
    def ctx(self) -> DistContext:
        return self.engine.state.ctx

    @classmethod
    def set_up(cls, cfg: RunConfig, ctx: DistContext, out_dir: Path | None,
               log: Callable[[str], None], resume: bool, init: Source | None = None) -> _Run:
        """Everything before the first step, in the order that fixes the random streams: seed,
        data, model init (and ``init``'s pretrained tensors, the frozen stages), per-rank seed,
        optimizer and schedule, then the resumed state (in its fine-tuning phase)."""
        train_cfg = cfg.train  # validated when it was made: ranges, batch split, image size
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        run_log = RunLog(out_dir, log, ctx.is_main, train_cfg.progress, train_cfg.log_every,
                         train_cfg.tensorboard, f"{cfg.model.name} on {cfg.data.name}")
        # fit checked that a fresh run's folder is new
        checkpoint = load_checkpoint(out_dir, warn=run_log) if resume else None
        if checkpoint is not None:  # on another number of processes: the same micro-batch
            cfg = keep_micro_batch(cfg, checkpoint, ctx.world_size, run_log)
            train_cfg = cfg.train
        seed_everything(train_cfg.seed)
        splits = build_run_splits(cfg, ctx)
        info = splits.info
        model_cfg = fit_to_data(cfg, info.num_classes, info.preprocess.in_chans, info.multi_label)
        raw = run_model(model_cfg, ctx, train_cfg.channels_last)
        if train_cfg.sync_bn:  # before freezing: a frozen layer's class derives from it
            run_log(f"train.sync_bn: {synchronise_batch_norm(raw)} BatchNorm layers normalise "
                    f"over the global batch" if ctx.world_size > 1 else
                    "train.sync_bn: one process, nothing to synchronise")
        if init is not None:
            run_log(str(load_pretrained(raw, init, info.class_names)))
        frozen = freeze(raw, train_cfg.freeze, train_cfg.freeze_bn, train_cfg.bn_affine)
        if frozen.stages or frozen.inference_bn:
            run_log(str(frozen))
        torch.manual_seed(train_cfg.seed + ctx.rank)  # dropout masks differ across processes
        data = RunData.build(cfg, ctx, splits)
        lr = scaled_lr(cfg.optimizer, train_cfg.batch_size)
        dtype = autocast_dtype(train_cfg.precision, ctx.device)
        # said before the optimizer is built: the first torch.optim optimizer imports
        # torch._dynamo, which takes a while, and the user should not wait for it in silence
        run_log(_intro(cfg, ctx, raw, data, lr, dtype, checkpoint))
        if (advice := restart_advice()) is not None:
            run_log(advice)
        state = fresh_state(cfg, ctx, raw, data.sampler, lr, dtype)
        if checkpoint is not None:
            warn_changed_settings(checkpoint["config"], cfg, run_log)
            if checkpoint.get("phase", 1) == 2:  # stopped in phase 2: its optimizer first
                enter_phase_two(cfg, state, lr, data.sampler.steps_per_epoch,
                                train_cfg.batch_size, data.sampler.epoch_samples)
            state.load_state_dict(checkpoint, warn=run_log)
        engine = make_engine(cfg, state, info, dtype)
        return cls(cfg, out_dir, engine, data, run_log)

    def train(self, stop: StopFlag) -> None:
        """Epoch after epoch until the last, the step budget, or a stop request (then saved)."""
        train_cfg = self.cfg.train
        for epoch in range(self.state.progress.epoch, train_cfg.epochs + 1):
            progress = self.state.progress
            if train_cfg.max_steps and progress.global_step >= train_cfg.max_steps:
                break
            if train_cfg.unfreeze_epoch and epoch >= train_cfg.unfreeze_epoch \
                    and self.state.phase == 1:
                self._phase_two(epoch)
            self.data.sampler.set_epoch(epoch, progress.step_in_epoch)
            self.log.start_epoch(epoch, train_cfg.epochs, self.data.sampler.steps_per_epoch,
                                 progress.step_in_epoch)
            t0, images_before = time.perf_counter(), progress.seen
            if self.ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.ctx.device)
            stopped = self._steps(epoch, stop)
            self.log.end_epoch()
            if stopped:
                self._checkpoint()
                self._interrupted(f"stopped by a signal at epoch {epoch} step "
                                  f"{progress.step_in_epoch}")
                break
            self._end_epoch(epoch, t0, progress.seen - images_before)
            if any_rank(self.ctx, [stop.is_set])[0]:
                self._interrupted(f"stopped by signal after epoch {epoch}")
                break

    def _phase_two(self, epoch: int) -> None:
        """Unfreeze for phase 2 (``phases.py``) and wrap the model anew (DDP, compile)."""
        sampler, cfg = self.data.sampler, self.cfg
        lr = scaled_lr(cfg.optimizer, cfg.train.batch_size)
        frozen = enter_phase_two(cfg, self.state, lr, sampler.steps_per_epoch,
                                 cfg.train.batch_size, sampler.epoch_samples)
        self.engine = make_engine(cfg, self.state, self.data.info, self.engine.dtype)
        self.log(f"epoch {epoch}: phase 2 of fine-tuning, {frozen}; lr "
                 f"{lr * cfg.train.unfreeze_lr_scale:.4g}")

    def _steps(self, epoch: int, stop: StopFlag) -> bool:
        """The epoch's optimizer steps from where it stands; True if a signal asked to stop."""
        train_cfg, progress, sampler = self.cfg.train, self.state.progress, self.data.sampler
        steps = sampler.steps_per_epoch
        batches = iter(self.data.train)
        for t in range(progress.step_in_epoch, steps):
            micros = [next(batches) for _ in range(train_cfg.accum_steps)]
            result = train_step(self.engine, micros, sampler.step_size(t), stop.is_set)
            progress.step_in_epoch, progress.global_step = t + 1, progress.global_step + 1
            record_step(progress, result, self.log, self.cfg)
            if not result.skipped:
                self.log.step(epoch, t + 1, steps, progress.global_step,
                              result.seen * self.ctx.world_size,
                              result.loss_sum / max(result.seen, 1),
                              self.state.optimizer.param_groups[0]["lr"])
            if result.stop:
                return True
            if t + 1 < steps and self._checkpoint_due(progress.global_step):
                self._checkpoint()
            if train_cfg.max_steps and progress.global_step >= train_cfg.max_steps:
                break
        return False

    def _checkpoint_due(self, step: int) -> bool:
        """A mid-epoch checkpoint: every ``checkpoint_every`` steps, or once
        ``checkpoint_every_s`` seconds have passed (rank 0's clock: every rank decides alike)."""
        train_cfg = self.cfg.train
        if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0:
            return True
        if not train_cfg.checkpoint_every_s or self.out_dir is None:
            return False
        late = self.ctx.is_main and time.perf_counter() - self.saved_at >= train_cfg.checkpoint_every_s
        return any_rank(self.ctx, [late])[0]

    def _end_epoch(self, epoch: int, t0: float, images_here: float) -> None:
        """Evaluate, check the unreadable-image budget, report, move on, checkpoint."""
        train_s = time.perf_counter() - t0
        row = epoch_row(self.engine, self.data.val, self.data.info, epoch, train_s, images_here,
                        self.data.recal)
        row["epoch_seconds"] = time.perf_counter() - t0  # training + evaluation
        for split in ("train", "val"):
            check_bad(row[f"{split}_bad"], row[f"{split}_bad"] + row[f"{split}_count"],
                      self.cfg.data.max_bad_fraction, True)
        self.state.history.append(row)
        self.log.epoch_row(row, self.state.history)
        self.state.progress.new_epoch()
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the state (every process takes part; rank 0 writes), unless it is not finite."""
        if self.out_dir is None:
            return
        progress = self.state.progress
        finite = all(bool(torch.isfinite(q).all()) for q in self.state.model.parameters())
        if progress.nonfinite_streak or any_rank(self.ctx, [not finite])[0]:
            self.log(f"warning: step {progress.global_step}: losses or weights are not finite; "
                     "keeping the last good checkpoint")
            return
        state = self.state.state_dict()
        if self.ctx.is_main:
            save_checkpoint(self.out_dir, {"config": self.cfg.to_json(), **state})
        barrier(self.ctx)
        self.saved_at = time.perf_counter()

    def _interrupted(self, why: str) -> None:
        self.log(f"{why}; resume with: xception train --resume {self.out_dir}")
        self.interrupted = True

    def finish(self) -> FitResult:
        """Give every rank rank 0's buffers; rank 0 writes metrics and the final weights."""
        seconds = time.perf_counter() - self.start
        state, ctx, out_dir = self.state, self.ctx, self.out_dir
        broadcast_buffers(ctx, state.model)
        if state.ema is not None:
            broadcast_buffers(ctx, state.ema.module)
        if self.data.test is not None and state.history and not self.interrupted:
            # data.val_holdout: the test split, once, with the final weights (and statistics)
            scores, _ = split_scores(self.engine, self.data.test, self.data.info, "test")
            state.history[-1] |= scores
            self.log("test (once, after the last epoch): " + "  ".join(
                f"{key} {100 * value:.2f}%" if "top" in key else f"{key} {value:.4f}"
                for key, value in scores.items()))
        if out_dir is not None and ctx.is_main and state.history:
            self.log.write_metrics(state.history, curves=True)
            if not self.interrupted:
                _save_weights(out_dir, self.cfg, self.data.info, state.model, state.ema,
                              state.history[-1])
                # finished: the newest checkpoint is good, so the fallback goes (and it, if asked)
                (out_dir / PREVIOUS).unlink(missing_ok=True)
                if not self.cfg.train.keep_checkpoint:
                    (out_dir / CHECKPOINT).unlink(missing_ok=True)
        self.log.close()
        barrier(ctx)
        return FitResult(state.model, self.data.info, state.history, out_dir, seconds,
                         self.interrupted,
                         ema_model=state.ema.module if state.ema is not None else None,
                         global_step=state.progress.global_step)


def _intro(cfg: RunConfig, ctx: DistContext, model: nn.Module, data: RunData, lr: float,
           dtype: torch.dtype | None, checkpoint: dict | None) -> str:
    """The run's first line: what trains on what, how long, how the batch splits."""
    train_cfg, world = cfg.train, ctx.world_size
    batch, accum = train_cfg.batch_size, train_cfg.accum_steps
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    at = checkpoint["progress"] if checkpoint is not None else None
    return (f"training {cfg.model.name} ({n_params:,} parameters) on {cfg.data.name}: "
            f"{len(data.train.dataset)} train / {len(data.val.dataset)} val images, "
            f"{train_cfg.epochs} epochs x {data.sampler.steps_per_epoch} steps, global batch "
            f"{batch} ({world} process(es) x {accum} micro-batch(es) of "
            f"{batch // (world * accum)}), lr {lr:.4g}, {ctx.device}, {precision}"
            + (f", resuming at epoch {at['epoch']} step {at['step_in_epoch']}" if at else ""))


def _save_weights(out_dir: Path, cfg: RunConfig, info: DatasetInfo, raw: nn.Module, ema,
                  final: dict) -> None:
    """``model.safetensors``: the weights evaluation uses (the EMA when on; raw ones beside)."""
    meta = {"data_config": section_dict(cfg.data), "model_name": cfg.model.name,
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
