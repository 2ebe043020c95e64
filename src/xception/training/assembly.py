"""The parts a run is assembled from, in the order ``fit`` builds them: the freshly initialised
model on the run's device, a fresh training state (optimizer, per-step schedule, scaler, EMA),
and the engine that steps it (DDP and ``torch.compile`` around the restored model)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import ModelConfig, RunConfig
from ..data import DatasetInfo, TrainBatches
from ..distributed import DistContext
from ..models import build_model
from .engine import Engine, make_ema
from .optimizers import build_optimizer, build_scheduler
from .phases import phase_steps
from .state import TrainState


def run_model(model_cfg: ModelConfig, ctx: DistContext, channels_last: bool) -> nn.Module:
    """The freshly initialised model on the run's device."""
    raw = build_model(model_cfg).to(ctx.device)
    return raw.to(memory_format=torch.channels_last) if channels_last else raw


def fresh_state(cfg: RunConfig, ctx: DistContext, raw: nn.Module, sampler: TrainBatches, lr: float,
                 dtype: torch.dtype | None) -> TrainState:
    """A fresh state: optimizer, per-step LR schedule over the run's step budget, scaler, EMA."""
    train_cfg, steps = cfg.train, sampler.steps_per_epoch
    total_steps = phase_steps(cfg, steps, 1)  # the whole run, or phase 1 of a fine-tuning
    optimizer = build_optimizer(raw, cfg.optimizer, lr)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch=steps,
                                batch=train_cfg.batch_size, epoch_samples=sampler.epoch_samples)
    scaler = torch.amp.GradScaler(ctx.device.type) if dtype == torch.float16 else None
    ema = make_ema(raw, train_cfg.ema_decay) if train_cfg.ema else None
    return TrainState(model=raw, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema,
                      ctx=ctx)


def make_engine(cfg: RunConfig, state: TrainState, info: DatasetInfo, dtype: torch.dtype | None) -> Engine:
    """Wrap the (restored) model for DDP and ``torch.compile`` as asked; add the step settings."""
    ctx, size = state.ctx, cfg.data.image_size
    ddp = None
    if ctx.enabled:
        ddp = DistributedDataParallel(state.model, device_ids=[ctx.device.index]
                                      if ctx.device.type == "cuda" else None)
    step_model: nn.Module = ddp if ddp is not None else state.model
    if cfg.train.compile:
        step_model = torch.compile(step_model)
    return Engine(state=state, step_model=step_model, ddp=ddp, dtype=dtype,
                  channels_last=cfg.train.channels_last, label_smoothing=cfg.optimizer.label_smoothing,
                  clip_grad_norm=cfg.optimizer.clip_grad_norm,
                  input_shape=(info.preprocess.in_chans, size, size), multi_label=info.multi_label,
                  num_classes=info.num_classes)
