"""One optimizer step: AMP, gradient accumulation, DDP, EMA, bad batches.

``Engine`` is the ``TrainState`` plus the step settings; ``train_step`` runs the A micro-batches
of one global step, skips the update (on every rank) when a loss is not finite, and returns sums
that add up across steps and processes. The evaluation pass lives in ``xception.evaluation``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..data import Batch
from ..distributed import any_rank
from ..evaluation import autocast, loss_sum
from .state import TrainState


class EmaDecay:
    """EMA update with TF's warm-up (``ExponentialMovingAverage(decay, num_updates)``): the decay
    is min(decay, (1 + n) / (10 + n)) after n updates, so early averages are not stuck at init."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema: list[torch.Tensor], model: list[torch.Tensor], n: torch.Tensor) -> None:
        steps = int(n)
        d = min(self.decay, (1 + steps) / (10 + steps))
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, model, 1.0 - d)
        else:
            for e, m in zip(ema, model, strict=True):
                e.copy_(m)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """Polyak averaging (``AveragedModel``) of parameters and BatchNorm statistics."""
    return AveragedModel(model, multi_avg_fn=EmaDecay(decay), use_buffers=True)


@dataclass(kw_only=True)
class Engine:
    """A ``TrainState`` plus how to take a step with it (the settings fixed for the whole run)."""

    state: TrainState             # raw model, optimizer, scheduler, scaler, EMA, process context
    step_model: nn.Module | None = None  # DDP- and/or compile-wrapped ``state.model``, if so
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper, for no_sync()
    dtype: torch.dtype | None = None  # autocast dtype; None: fp32
    channels_last: bool = False
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0
    input_shape: tuple[int, int, int] = (3, 32, 32)
    multi_label: bool = False     # for the stand-in of an all-unreadable micro-batch
    num_classes: int = 0

    @property
    def model(self) -> nn.Module:
        """What the step calls."""
        return self.step_model if self.step_model is not None else self.state.model

    @property
    def device(self) -> torch.device:
        return self.state.ctx.device

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass
class StepResult:
    loss_sum: float = 0.0         # summed over this process's images (NaN/inf if not finite)
    correct: int = 0              # top-1 hits (multi-label: top prediction is a positive)
    seen: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    skipped: bool = False         # a loss was not finite on some rank: no update was made
    stop: bool = False            # some rank was asked to stop


def _placeholder(engine: Engine) -> tuple[torch.Tensor, ...]:
    """A 2-image stand-in for a micro-batch whose images were all unreadable: under DDP every rank
    must run forward/backward for the gradient all-reduce; its loss is multiplied by 0."""
    x = torch.zeros((2, *engine.input_shape))
    y = torch.zeros(2, engine.num_classes) if engine.multi_label else torch.zeros(2, dtype=torch.long)
    return x, y


def train_step(engine: Engine, micros: list[Batch], global_size: int,
               stop_requested: bool = False) -> StepResult:
    """One optimizer step over this process's micro-batches of a global batch of ``global_size``.

    Each micro-batch's summed loss is scaled by world_size / global_size, so after DDP averages
    the gradients over ranks and they accumulate over micro-batches, the gradient is the mean over
    the global batch however it was split. A non-finite loss on any rank skips the update on all
    of them; the LR schedule still advances, so it stays a function of the step count.
    """
    state = engine.state
    result = _accumulate(engine, micros, global_size)
    nonfinite, result.stop = any_rank(state.ctx, [not math.isfinite(result.loss_sum), stop_requested])
    if nonfinite:
        state.scheduler.step()
        result.skipped = True
        return result
    _update(engine)
    return result


def _accumulate(engine: Engine, micros: list[Batch], global_size: int) -> StepResult:
    """Forward and backward over the micro-batches (DDP syncs on the last); the step's sums."""
    state = engine.state
    # after an evaluation (which puts the raw model, not a DDP/compile wrapper, in eval mode);
    # otherwise a walk over every module that changes nothing
    if not (engine.model.training and state.model.training):
        engine.model.train()
    result = StepResult()
    losses, hits = [], []
    scale = state.ctx.world_size / global_size
    zeroed = False
    for index, batch in enumerate(micros):
        result.bad += batch.bad
        real = batch.x is not None
        if not real and not state.ctx.enabled:
            continue
        x, y = (batch.x, batch.y) if real else _placeholder(engine)
        x = x.to(engine.device, non_blocking=True, memory_format=engine.memory_format)
        y = y.to(engine.device, non_blocking=True)
        last = index == len(micros) - 1
        sync = engine.ddp.no_sync() if engine.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            with autocast(engine.device, engine.dtype):
                logits = engine.model(x)
            loss = loss_sum(logits, y, engine.label_smoothing)
            step_loss = loss * (scale if real else 0.0)
            if not zeroed:  # here, after the forward: backward reuses the old gradients' memory
                state.optimizer.zero_grad(set_to_none=True)
                zeroed = True
            (state.scaler.scale(step_loss) if state.scaler is not None else step_loss).backward()
        if real:
            losses.append(loss.detach())
            top = logits.detach().argmax(1)
            hits.append(y.gather(1, top[:, None]).sum() if y.dim() == 2 else (top == y).sum())
            result.seen += len(y)
    if not zeroed:  # no image was readable: nothing to apply
        state.optimizer.zero_grad(set_to_none=True)
    if losses:  # one host sync per step for the loss and the hits
        total, correct = torch.stack([torch.stack(losses).sum(),
                                      torch.stack(hits).sum().float()]).tolist()
        result.loss_sum, result.correct = total, int(correct)
    return result


def _update(engine: Engine) -> None:
    """Clip the (unscaled) gradients, step the optimizer (through the scaler), schedule, EMA."""
    state = engine.state
    if engine.clip_grad_norm:
        if state.scaler is not None:
            state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), engine.clip_grad_norm)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
