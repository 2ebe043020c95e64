"""Runs that an experiment's variants start from (``Experiment.stages``: transfer's pretraining),
trained once per seed into ``<out>/stages/<stage>/seed<k>/``, a run folder whose
``model.safetensors`` the variants load.

A variant names a stage by its ``train.init`` setting, ``"@<stage name>"``. For training, the
reference becomes the stage's folder for the variant's seed; in the run's key it becomes the
stage's own run key, so the key says which pretraining a run started from (not where it lies).
Stages take part in the claims of processes sharing the folder (``claims.py``): a stage another
process is training leaves the variants that need it for later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import RunConfig
from .claims import CLAIMS, claim, release
from .design import Experiment, Variant
from .resumable import fit_resumably

REF = "@"
WEIGHTS = "model.safetensors"


def stage_name(settings: dict[str, dict[str, Any]]) -> str | None:
    """The stage a variant starts from ("@pretrain" -> "pretrain"), or None."""
    init = settings.get("train", {}).get("init", "")
    return init[len(REF):] if isinstance(init, str) and init.startswith(REF) else None


def stage_folder(out: Path, name: str, seed: int) -> Path:
    return out / "stages" / name.replace(" ", "-") / f"seed{seed}"


def bind(settings: dict[str, dict[str, Any]], init: str) -> dict[str, dict[str, Any]]:
    """``settings`` with ``train.init`` replaced by ``init``."""
    return {**settings, "train": {**settings.get("train", {}), "init": init}}


def find_stage(experiment: Experiment, name: str) -> Variant:
    for stage in experiment.stages:
        if stage.name == name:
            return stage
    raise ValueError(f"experiment {experiment.name}: no stage {name!r} "
                     f"(stages: {', '.join(s.name for s in experiment.stages) or 'none'})")


def ensure_stage(stage_cfg: RunConfig, key: str, folder: Path, out: Path,
                 log: Callable[[str], None]) -> bool:
    """Train the stage run into ``folder`` unless its weights are there; False when another
    process holds its claim (the caller leaves what needs it for later)."""
    if (folder / WEIGHTS).exists():
        return True
    holder = claim(out / CLAIMS, key)
    if holder is not None:
        log(f"stage {folder.parent.name} seed {stage_cfg.train.seed}: being trained by another "
            f"process ({holder})")
        return False
    try:
        if (folder / WEIGHTS).exists():  # finished while we looked
            return True
        log(f"stage {folder.parent.name}, seed {stage_cfg.train.seed}: training into {folder}")
        if fit_resumably(stage_cfg, folder).result.interrupted:
            log(f"stage {folder}: interrupted; the same command continues it")
            raise KeyboardInterrupt
        return True
    finally:
        release(out / CLAIMS, key)
