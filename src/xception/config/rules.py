"""The rules a run's settings obey, each in one place: ``check_section`` (one section's own
values, when the section is made), ``validate`` (what needs several sections, when a
``RunConfig`` is made) and ``fit_to_data`` (what needs the data: its classes, channels and
labels, once they are read).

A typo in a key or a bad value fails in the first second with the valid choices listed, not after
an hour of training. The data section's table is its own (``data.section``); the rules of one
model (``segments`` must divide its widths) are the model config's (``models``).
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

from ..distributed import world_size
from ..errors import ConfigError, Range, check_fields, show

CHOICES: dict[str, tuple] = {
    "optimizer.name": ("sgd", "adamw", "rmsprop"),
    "schedule.name": ("cosine", "step", "constant"),
    "schedule.decay_unit": ("epochs", "samples", "steps"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.dist_backend": ("auto", "nccl", "gloo"),
}

# key -> (test, what it must be)
RANGES: dict[str, Range] = {
    "optimizer.lr": (lambda v: v > 0, "> 0"),
    "optimizer.lr_reference_batch": (lambda v: v >= 0, ">= 0"),
    "optimizer.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.weight_decay": (lambda v: v >= 0, ">= 0"),
    "optimizer.alpha": (lambda v: 0 < v < 1, "in (0, 1)"),
    "optimizer.eps": (lambda v: v > 0, "> 0"),
    "optimizer.label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.clip_grad_norm": (lambda v: v >= 0, ">= 0"),
    "schedule.warmup_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "schedule.decay_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "schedule.decay_every": (lambda v: v > 0, "> 0"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.max_steps": (lambda v: v >= 0, ">= 0"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.accum_steps": (lambda v: v >= 1, ">= 1"),
    "train.eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "train.threads": (lambda v: v >= 0, ">= 0"),
    "train.ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.checkpoint_every": (lambda v: v >= 0, ">= 0"),
    "train.checkpoint_every_s": (lambda v: v >= 0, ">= 0 (seconds; 0: off)"),
    "train.bn_recalibration": (lambda v: v >= 0, ">= 0 (training batches; 0 = off)"),
    "train.max_nonfinite": (lambda v: v >= 1, ">= 1"),
    "train.log_every": (lambda v: v >= 1, ">= 1"),
    "train.unfreeze_epoch": (lambda v: v >= 0, ">= 0 (0: no second phase)"),
    "train.unfreeze_lr_scale": (lambda v: v > 0, "> 0"),
    "optimizer.head_lr_scale": (lambda v: v > 0, "> 0"),
}


def check_section(section: Any, name: str) -> None:
    """One run section's own values (``name``: its key, "train"), when it is made: a section
    built directly is held to the same rules as one read from a file."""
    check_fields(section, name, CHOICES, RANGES)


def validate(cfg: Any) -> None:
    """What needs more than one section, when a ``RunConfig`` is made (each section checked
    itself already). Under torchrun the process count is known then (``WORLD_SIZE``), so a
    global batch that does not split over the processes fails here too."""
    train, world = cfg.train, world_size()
    if train.batch_size % (world * train.accum_steps):
        raise ConfigError(f"train.batch_size={train.batch_size} (global) must be divisible by "
                          f"{world} process(es) x train.accum_steps={train.accum_steps}")
    if train.unfreeze_epoch > train.epochs:
        raise ConfigError(f"train.unfreeze_epoch={train.unfreeze_epoch} is after the last epoch "
                          f"(train.epochs={train.epochs}); phase 2 would never start")
    if train.unfreeze_epoch and train.freeze == "none" and not train.freeze_bn:
        raise ConfigError("train.unfreeze_epoch is set but nothing is frozen: set train.freeze "
                          "(e.g. backbone) for phase 1, or leave train.unfreeze_epoch=0")
    size, least = cfg.data.image_size, cfg.model.config.min_input_size
    if size < least:
        raise ConfigError(f"data.image_size={size}: input {size}x{size} is smaller than "
                          f"{cfg.model.name}'s minimum of {least}x{least}; set data.image_size "
                          f"to at least {least}")


def fit_to_data(cfg: Any, num_classes: int, in_chans: int, multi_label: bool) -> Any:
    """The model config for the data: its class and channel counts where the run did not set
    them (a second model config only when they differ from the first); a head or stem the run
    did set that does not fit the data, or settings for the other kind of labels, are refused."""
    section = cfg.model
    given = {"num_classes": num_classes, "in_chans": in_chans}
    changes = {k: v for k, v in given.items()
               if k not in section.overrides and getattr(section.config, k) != v}
    model = replace(section.config, **changes) if changes else section.config
    for key, what in (("num_classes", f"{num_classes} classes"),
                      ("in_chans", f"{in_chans}-channel images")):
        if getattr(model, key) != given[key]:  # refused before any step
            raise ConfigError(f"model.{key}={getattr(model, key)} but the data ({cfg.data.name}) "
                              f"has {what}; leave model.{key} unset (it follows the data)")
    if multi_label and cfg.optimizer.label_smoothing:
        raise ConfigError("optimizer.label_smoothing applies to single-label data only")
    return model


def check_model_floats(model_config: Any) -> None:
    """Every float field of the model's config (bn_eps, dropout, ...) must be finite too."""
    for f in fields(model_config):
        value = getattr(model_config, f.name)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"model.{f.name} must be a finite number, got "
                                  f"{show(value)}")
