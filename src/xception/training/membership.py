"""A run resumed on another number of processes (torchrun ``--nnodes MIN:MAX`` restarting with
fewer nodes, or a job moved to other machines) keeps its per-process micro-batch.

``train.batch_size`` is the global batch, so the resumed run keeps it whatever the number of
processes; what would change is the micro-batch each process trains on (batch / (processes x
``train.accum_steps``)): twice as many images per GPU on half the GPUs (memory) and another
batch for BatchNorm's statistics (numerics). So ``train.accum_steps`` is adjusted to keep the
micro-batch: 4 processes x 1 becomes 2 x 2, and back. When the new number of processes cannot
take the old micro-batch (3 x 1 on 2 processes), the resume is refused with the settings to
change. Changing ``train.batch_size`` on resume is a new split the user chose: left as given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..config import RunConfig, with_changes
from ..errors import ConfigError


def keep_micro_batch(cfg: RunConfig, checkpoint: dict[str, Any], world: int,
                     log: Callable[[str], None]) -> RunConfig:
    """``cfg`` with ``train.accum_steps`` set so that the micro-batch is the checkpoint's."""
    before = checkpoint.get("world_size", world)
    saved = RunConfig.from_dict(json.loads(checkpoint["config"])).train
    if before == world or saved.batch_size != cfg.train.batch_size:
        return cfg
    slots = before * saved.accum_steps  # micro-batches per global batch
    micro = saved.batch_size // slots
    if slots % world:
        raise ConfigError(
            f"the checkpoint was written by {before} process(es) x {saved.accum_steps} "
            f"micro-batch(es) of {micro} images; {world} processes cannot split the global batch "
            f"of {saved.batch_size} into micro-batches of {micro}. Resume on a number of processes "
            f"that divides {slots}, or choose the split: --set train.accum_steps=N (BatchNorm's "
            "batch then changes) or train.batch_size")
    accum = slots // world
    log(f"resumed on {world} process(es), the checkpoint's run had {before}: the global batch "
        f"({saved.batch_size}) and the micro-batch ({micro}) are kept, train.accum_steps "
        f"{saved.accum_steps} -> {accum}")
    return with_changes(cfg, {"train": {"accum_steps": accum}})
