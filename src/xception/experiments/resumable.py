"""An experiment's run, trained into a folder of its own so that a killed process loses at most
the epoch in progress: the next process that claims the run (``claims.py``) resumes it from the
folder's checkpoint and ends with the same weights and numbers as an uninterrupted run (the
resume of ``xception train --resume``). Runs of a long experiment last up to an hour and a half
on a CPU, longer than many sessions leave; without this a session's end discards them.

Only the process holding the run's claim touches its folder, so a folder without a checkpoint is
a start killed before its first epoch ended: it is cleared and the run starts again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..training.checkpoint import has_checkpoint, load_checkpoint
from ..training.fit import FitResult, fit

PARTIAL = "partial"  # <experiment folder>/partial/<run key>/: runs in progress (not committed)


@dataclass
class Trained:
    result: FitResult
    resumed_after: int  # epochs an earlier process had finished (0: trained from the start)
    seconds: float      # training and evaluation, the earlier processes' epochs included


def fit_resumably(cfg: RunConfig, folder: Path) -> Trained:
    """Train ``cfg`` into ``folder``, continuing its checkpoint if it has one."""
    earlier: list[dict] = []
    resume = has_checkpoint(folder)
    if resume:
        earlier = load_checkpoint(folder, warn=lambda _: None)["history"]
    elif folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    result = fit(cfg, folder, log=lambda _: None, resume=resume)
    before = sum(row.get("epoch_seconds", 0.0) for row in earlier)
    return Trained(result, len(earlier), time.perf_counter() - started + before)


def clear(folder: Path) -> None:
    """Remove a recorded run's folder (its numbers are in ``runs.jsonl`` now)."""
    shutil.rmtree(folder, ignore_errors=True)
