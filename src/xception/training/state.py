"""Everything a run carries from one step to the next, and putting a run back where it stopped.

``TrainState`` owns the model, optimizer, LR scheduler, gradient scaler, EMA, the data position
and epoch sums (``Progress``), the metrics so far and the process RNG states. Its
``state_dict()`` / ``load_state_dict()`` are what a checkpoint holds; under torchrun both are
called by every process (sums and RNG states are combined across ranks).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..config import RunConfig
from ..config.loader import flatten
from ..distributed import DistContext, all_sum, gather_tensors

# settings that may change on --resume without breaking exactness
RESUME_SAFE = {"train.epochs", "train.max_steps", "train.progress", "train.log_every",
               "train.tensorboard", "train.checkpoint_every", "train.checkpoint_every_s",
               "train.keep_checkpoint",
               "train.device", "train.max_nonfinite", "data.num_workers", "data.prefetch_factor",
               "data.root", "data.download", "data.max_bad_fraction"}

SUMS = ("loss_sum", "correct", "seen", "bad", "skipped")


@dataclass
class Progress:
    """Where the run stands; saved in checkpoints (the epoch sums are over all processes)."""

    epoch: int = 1                    # the epoch in progress
    step_in_epoch: int = 0            # optimizer steps done in it
    global_step: int = 0
    nonfinite_streak: int = 0
    loss_sum: float = 0.0             # this epoch's training sums
    correct: float = 0.0
    seen: float = 0.0
    bad: float = 0.0
    skipped: float = 0.0

    def sums(self) -> list[float]:
        return [getattr(self, k) for k in SUMS]

    def clear_sums(self) -> None:
        for k in SUMS:
            setattr(self, k, 0.0)

    def new_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.clear_sums()


@dataclass(kw_only=True)
class TrainState:
    """What an exact resume restores. ``ctx`` says which process this is: ``state_dict`` and
    ``load_state_dict`` are collective-aware, so every process of a run must call them."""

    model: nn.Module                  # the plain module (not DDP- or compile-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    ema: AveragedModel | None = None
    progress: Progress = field(default_factory=Progress)
    history: list[dict] = field(default_factory=list)   # one metrics row per finished epoch
    ctx: DistContext = field(default_factory=DistContext)
    phase: int = 1                    # fine-tuning: 2 once train.unfreeze_epoch has unfrozen all

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint contents: the epoch sums all-reduced, every rank's torch (and CUDA) RNG
        state gathered. Every process gets the same dict; one of them writes it."""
        ctx = self.ctx
        sums = all_sum(ctx, self.progress.sums())
        rng = rng_state(ctx.device)
        torch_states = gather_tensors(ctx, rng["torch"])
        cuda_states = gather_tensors(ctx, rng["cuda"]) if "cuda" in rng else None
        return {
            "world_size": ctx.world_size, "phase": self.phase,
            "progress": asdict(self.progress) | dict(zip(SUMS, sums, strict=True)),
            "history": self.history, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch_states, "cuda": cuda_states, "numpy": rng["numpy"],
                    "python": rng["python"]}}

    def load_state_dict(self, state: dict[str, Any], warn: Callable[[str], None] = print) -> None:
        """Put the run back where ``state`` was taken. Each rank takes its own RNG state (if the
        world size is unchanged); only rank 0 keeps the saved sums, so they count once."""
        if state.get("phase", 1) != self.phase:  # fit builds the checkpoint's phase first
            raise ValueError(f"the checkpoint is in phase {state.get('phase', 1)}, this state in "
                             f"phase {self.phase}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                warn("warning: the checkpoint has no EMA weights; the average restarts here")
        self.progress = Progress(**state["progress"])
        if not self.ctx.is_main:  # the saved sums are over all processes: count them once
            self.progress.clear_sums()
        self.history = list(state["history"])
        self._load_rng(state["rng"], state["world_size"], warn)

    def _load_rng(self, rng: dict[str, Any], world_size: int, warn: Callable[[str], None]) -> None:
        ctx = self.ctx
        if world_size != ctx.world_size:
            warn(f"warning: the checkpoint was written by {world_size} process(es), this run "
                 f"has {ctx.world_size}; random streams restart (data order is unaffected)")
            return
        mine = {"torch": rng["torch"][ctx.rank], "numpy": rng["numpy"], "python": rng["python"]}
        if rng.get("cuda") is not None:
            mine["cuda"] = rng["cuda"][ctx.rank]
        set_rng_state(mine, ctx.device)


def warn_changed_settings(saved_config: str, cfg: RunConfig, warn: Callable[[str], None]) -> None:
    """Resuming with other settings than the checkpoint's (beyond ``RESUME_SAFE``) is allowed,
    but the result will not be the uninterrupted run's: say so."""
    old = flatten(RunConfig.from_dict(json.loads(saved_config)))  # an older file: today's defaults
    new = flatten(cfg)
    changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUME_SAFE)
    if changed:
        warn(f"warning: resuming with changed settings {changed}; the result will differ from an "
             "uninterrupted run")


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states in types ``weights_only`` loading accepts."""
    mt, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Undo ``rng_state``: the next draw of torch, numpy and ``random`` is the saved one's."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
