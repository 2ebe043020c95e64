"""Optimizers and learning-rate schedules, including the paper's staircase decays.

Every schedule is a pure function of the optimizer step (``LRRule``), wrapped in PyTorch's
``LambdaLR``, so the rate at any step can be computed, tested and restored from a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import OptimizerSection, ScheduleSection
from ..errors import ConfigError


def scaled_lr(cfg: OptimizerSection, global_batch: int) -> float:
    """The peak LR for ``global_batch``: ``lr * global_batch / lr_reference_batch`` (linear scaling
    rule) when a reference batch is set, else ``lr`` unchanged."""
    if cfg.lr_reference_batch:
        return cfg.lr * global_batch / cfg.lr_reference_batch
    return cfg.lr


def build_optimizer(model: nn.Module, cfg: OptimizerSection, lr: float | None = None
                    ) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm parameters and biases (1-d tensors), as usual for convnets;
    only trainable parameters (``train.freeze``); the head at ``lr x head_lr_scale``.

    The update runs as PyTorch's fused kernel where it has one (SGD and AdamW on CPU/CUDA,
    ``update_kernel``): one pass over each tensor instead of several ops per parameter or
    per multi-tensor group; the same formula, equal to the per-parameter loop to a few float32 ulps
    (fused multiply-adds). RMSprop has no fused kernel: the multi-tensor step (bit-identical to
    the loop).
    """
    lr = cfg.lr if lr is None else lr
    groups = param_groups(model, cfg, lr)
    if not any(group["params"] for group in groups):
        raise ConfigError("no parameter trains: every stage is frozen (train.freeze), and "
                          "BatchNorm's scale and shift with them; unfreeze something")
    params = [p for group in groups for p in group["params"]]
    kernel = update_kernel(params, fused_available=cfg.name in ("sgd", "adamw"))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **kernel)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kernel)
    return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, alpha=cfg.alpha, eps=cfg.eps,
                               **kernel)


def param_groups(model: nn.Module, cfg: OptimizerSection, lr: float) -> list[dict]:
    """The trainable parameters in groups: with weight decay (> 1-d) and without; with a
    ``head_lr_scale`` other than 1 the head's in groups of their own at that multiple of ``lr``.
    Frozen parameters (``requires_grad=False``) are in none: no state, no decay."""
    head = getattr(model, "head", None)
    in_head = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    parts = ((None, 1.0),) if cfg.head_lr_scale == 1.0 else ((False, 1.0),
                                                            (True, cfg.head_lr_scale))
    groups = []
    for part, scale in parts:
        for decay in (True, False):
            chosen = [p for p in model.parameters() if p.requires_grad and (p.dim() > 1) == decay
                      and (part is None or (id(p) in in_head) == part)]
            if chosen or part is None:  # one rate: always the two groups (old checkpoints)
                groups.append({"params": chosen, "lr": lr * scale,
                               "weight_decay": cfg.weight_decay if decay else 0.0})
    return groups


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def update_kernel(params: list[torch.Tensor], fused_available: bool) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a float tensor on CPU or CUDA (where PyTorch's
    fused SGD/AdamW run; the optimizer's share of a CPU step in ``benchmarks/RESULTS.md``), else
    ``{"foreach": True}`` (PyTorch's CPU default is the slower per-parameter loop)."""
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return {"fused": True} if fused_available and fusable and params else {"foreach": True}


@dataclass
class LRRule:
    """The LR multiplier for optimizer step ``s`` (0-based): warm-up, then cosine/step/constant.

    ``steps_per_epoch``, ``batch`` (global) and ``epoch_samples`` (images used per epoch) turn a
    step into epochs and samples seen, so "x0.94 every 2 epochs" and "x0.9 every 3,000,000
    samples" are exact staircases.
    """

    name: str
    total_steps: int
    steps_per_epoch: int
    batch: int
    epoch_samples: int
    warmup_steps: int = 0
    decay_rate: float = 1.0
    decay_every: float = 1.0
    decay_unit: str = "epochs"

    def samples_before(self, s: int) -> int:
        """Images seen by the steps before step ``s``."""
        return (s // self.steps_per_epoch) * self.epoch_samples + (s % self.steps_per_epoch) * self.batch

    def decays_before(self, s: int) -> int:
        if self.decay_unit == "samples":
            progress = self.samples_before(s) / self.decay_every
        elif self.decay_unit == "epochs":
            progress = s / (self.steps_per_epoch * self.decay_every)
        else:
            progress = s / self.decay_every
        return math.floor(progress + 1e-9)

    def __call__(self, s: int) -> float:
        if self.name == "constant":
            return 1.0
        if s < self.warmup_steps:
            return 0.01 + 0.99 * s / self.warmup_steps
        if self.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(s - self.warmup_steps, span) / span))
        return self.decay_rate ** self.decays_before(s)


def lr_rule(cfg: ScheduleSection, total_steps: int, steps_per_epoch: int = 1, batch: int = 1,
            epoch_samples: int | None = None) -> LRRule:
    warmup = 0
    if cfg.warmup_fraction > 0 and cfg.name != "constant":
        warmup = min(max(1, round(cfg.warmup_fraction * total_steps)), total_steps)
    return LRRule(cfg.name, total_steps, max(1, steps_per_epoch), batch,
                  steps_per_epoch * batch if epoch_samples is None else epoch_samples,
                  warmup, cfg.decay_rate, cfg.decay_every, cfg.decay_unit)


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleSection, total_steps: int, *,
                    steps_per_epoch: int = 1, batch: int = 1,
                    epoch_samples: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` over ``total_steps``: it scales the optimizer's own lr (the peak),
    so the schedule needs no lr of its own."""
    rule = lr_rule(cfg, total_steps, steps_per_epoch, batch, epoch_samples)
    return torch.optim.lr_scheduler.LambdaLR(opt, rule)
