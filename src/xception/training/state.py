"""What a run's checkpoint holds beyond tensors, and putting a run back where it stopped.

``Progress`` is the data position (epoch, step in it) plus the epoch's running sums; ``save_run``
gathers what every process must contribute (sums, RNG states) and rank 0 writes it;
``restore_run`` loads model, optimizer, scheduler, scaler, EMA, RNG and position.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..distributed import DistContext, all_sum, barrier, gather_tensors
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .config import RunConfig
from .engine import Engine

# settings that may change on --resume without breaking exactness
RESUME_SAFE = {"train.epochs", "train.max_steps", "train.progress", "train.log_every",
               "train.tensorboard", "train.checkpoint_every", "train.keep_checkpoint",
               "train.device", "train.max_nonfinite", "data.num_workers", "data.prefetch_factor",
               "data.root", "data.download", "data.max_bad_fraction"}


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
        return [self.loss_sum, self.correct, self.seen, self.bad, self.skipped]

    def new_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.loss_sum = self.correct = self.seen = self.bad = self.skipped = 0.0


def _flat(d: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, sec in d.items() for k, v in sec.items()}


def save_run(out_dir: Path, cfg: RunConfig, ctx: DistContext, eng: Engine, state: Progress,
          history: list[dict]) -> None:
    """Every process takes part (sums and RNG states are gathered); rank 0 writes."""
    sums = all_sum(ctx, state.sums())
    rng = rng_state(eng.device)
    torch_states = gather_tensors(ctx, rng["torch"])
    cuda_states = gather_tensors(ctx, rng["cuda"]) if "cuda" in rng else None
    if ctx.is_main:
        progress = asdict(state) | dict(zip(["loss_sum", "correct", "seen", "bad", "skipped"],
                                            sums, strict=True))
        save_checkpoint(out_dir, {
            "config": cfg.to_json(), "world_size": ctx.world_size, "progress": progress,
            "history": history, "model": eng.raw.state_dict(),
            "optimizer": eng.opt.state_dict(), "scheduler": eng.sched.state_dict(),
            "scaler": eng.scaler.state_dict() if eng.scaler is not None else None,
            "ema": eng.ema.state_dict() if eng.ema is not None else None,
            "rng": {"torch": torch_states, "cuda": cuda_states, "numpy": rng["numpy"],
                    "python": rng["python"]}})
    barrier(ctx)


def restore_run(ckpt: dict, cfg: RunConfig, ctx: DistContext, raw: nn.Module, opt, sched, scaler,
             ema, say: Callable[[str], None]) -> tuple[Progress, list[dict]]:
    old = _flat(RunConfig.from_dict(json.loads(ckpt["config"])).to_dict())
    new = _flat(cfg.to_dict())
    changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUME_SAFE)
    if changed:
        say(f"warning: resuming with changed settings {changed}; the result will differ from an "
            "uninterrupted run")
    raw.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        if ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        else:
            say("warning: the checkpoint has no EMA weights; the average restarts here")
    state = Progress(**ckpt["progress"])
    if not ctx.is_main:  # the saved sums are over all processes: count them once
        state.loss_sum = state.correct = state.seen = state.bad = state.skipped = 0.0
    rng = ckpt["rng"]
    if ckpt["world_size"] == ctx.world_size:
        mine = {"torch": rng["torch"][ctx.rank], "numpy": rng["numpy"], "python": rng["python"]}
        if rng.get("cuda") is not None:
            mine["cuda"] = rng["cuda"][ctx.rank]
        set_rng_state(mine, ctx.device)
    else:
        say(f"warning: the checkpoint was written by {ckpt['world_size']} process(es), this run "
            f"has {ctx.world_size}; random streams restart (data order is unaffected)")
    return state, list(ckpt["history"])
