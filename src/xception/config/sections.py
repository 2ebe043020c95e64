"""The run configuration's schema: five frozen sections and ``RunConfig`` that holds them.

A ``RunConfig`` is validated when it is made (``rules.validate``) and cannot be changed
afterwards, so what was checked is what runs: ``overrides.with_changes`` /
``apply_overrides`` make a new one. The ``model`` section is parsed into the model's own config
dataclass when the section is made (``ModelSection.config``), once.

The ``model`` section has two keys of its own, ``name`` and ``overrides``; every other
``model.<key>`` of ``--set`` is a field of the model's config and goes into ``overrides``
(``--set model.residual=false``). No model config may have a field called ``name`` or
``overrides`` (``tests/config`` checks every registered model), so the two cannot collide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.section import DataSection
from ..models import InceptionConfig, XceptionConfig, model_config
from . import loader, rules

ModelConfig = XceptionConfig | InceptionConfig


class ReadOnlyDict(dict):
    """A dict that refuses changes (JSON, ``==`` and ``repr`` as a dict): a section's mapping
    cannot drift from what was validated. Make a new config with ``apply_overrides`` instead."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a RunConfig cannot be changed after it is validated; make a new one with "
                        "apply_overrides(cfg, [...]) or dataclasses.replace")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple:
        return type(self), (dict(self),)


@dataclass(frozen=True)
class ModelSection:
    """A registered model name plus any fields of its config, e.g. ``{"residual": False}``.

    Parsed into the model's config dataclass when the section is made (``config``): a bad name,
    field or value (``segments`` that does not divide a width) fails here, with the run config.
    ``overrides`` is read-only, so the parsed config cannot go stale.
    """

    name: str = "xception_small"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", ReadOnlyDict(self.overrides))
        object.__setattr__(self, "_config", model_config(self.name, **self.overrides))
        rules.check_model_floats(self.config)

    @property
    def config(self) -> ModelConfig:
        """The parsed, validated model config (``XceptionConfig`` or ``InceptionConfig``)."""
        return self._config  # type: ignore[attr-defined]


@dataclass(frozen=True)
class OptimizerSection:
    name: str = "sgd"             # sgd | adamw | rmsprop
    lr: float = 0.1               # peak learning rate (for lr_reference_batch, if set)
    lr_reference_batch: int = 0   # >0: lr is for this global batch; scaled linearly to the real one
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4    # PyTorch/TF-slim convention: gradient += wd * w
    alpha: float = 0.9            # RMSprop's moving-average decay of squared gradients
    eps: float = 1.0              # RMSprop epsilon (1.0 as in TF's Inception training)
    label_smoothing: float = 0.0  # single-label only
    clip_grad_norm: float = 0.0   # >0: clip the global gradient norm to this
    head_lr_scale: float = 1.0    # the head's learning rate = lr x this (fine-tuning: > 1)

    def __post_init__(self) -> None:
        rules.check_section(self, "optimizer")


@dataclass(frozen=True)
class ScheduleSection:
    name: str = "cosine"          # cosine (linear warm-up, cosine decay) | step | constant
    warmup_fraction: float = 0.15  # of all steps (cosine and step)
    decay_rate: float = 0.94      # step: lr *= decay_rate every decay_every decay_units
    decay_every: float = 2.0
    decay_unit: str = "epochs"    # epochs | samples | steps

    def __post_init__(self) -> None:
        rules.check_section(self, "schedule")


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 8
    max_steps: int = 0            # >0: stop after this many optimizer steps (a fixed budget)
    batch_size: int = 64          # GLOBAL batch: images per optimizer step over all processes
    accum_steps: int = 1          # micro-batches per step and process (batch_size / world / accum)
    eval_batch_size: int = 256    # per process
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda | cuda:N (torchrun: the local GPU)
    precision: str = "auto"       # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True    # faster on CPU (oneDNN) and GPU (cuDNN) for this model
    compile: bool = False         # torch.compile the training model
    threads: int = 0              # CPU threads; 0 = PyTorch's default (all cores)
    ema: bool = False             # Polyak (exponential moving) average of the weights
    ema_decay: float = 0.9999     # per optimizer step
    bn_recalibration: int = 0     # >0: BatchNorm statistics from this many training batches
    #                               before each evaluation (training/bn_stats.py); 0: running
    checkpoint_every: int = 0     # >0: also checkpoint every this many steps (else epoch ends)
    checkpoint_every_s: float = 0.0  # >0: also checkpoint once this many seconds have passed
    #                               since the last one (preemptible machines)
    keep_checkpoint: bool = True  # keep checkpoint.pt after a finished run (to extend it later)
    max_nonfinite: int = 5        # abort after this many non-finite losses in a row
    progress: bool = True         # tqdm on a terminal, log lines every log_every steps otherwise
    log_every: int = 100
    tensorboard: bool = False     # also write TensorBoard scalars to <run>/tensorboard
    dist_backend: str = "auto"    # torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    sync_bn: bool = False         # torchrun: BatchNorm statistics over the global batch
    # fine-tuning (training/pretrained.py, training/freezing.py)
    init: str = ""                # weights file or run folder to start from (any convert reads)
    freeze: str = "none"          # none | backbone | comma-separated stage names (stem,...)
    freeze_bn: bool = False       # every BatchNorm in inference mode (running statistics kept)
    bn_affine: bool = False       # with freeze_bn: still train BatchNorm's scale and shift
    unfreeze_epoch: int = 0       # >0: from this epoch on everything trains (phase 2), with a
    #                               new optimizer at optimizer.lr x unfreeze_lr_scale
    unfreeze_lr_scale: float = 0.01

    def __post_init__(self) -> None:
        rules.check_section(self, "train")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run does, decided before any work starts. Sections: model, data, optimizer
    (``optim`` is accepted as an alias in files and ``--set``), schedule, train."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        rules.validate(self)

    def to_dict(self) -> dict:
        """Plain, JSON-ready values (what ``config.json`` holds; ``from_dict`` reads it back)."""
        return {s.name: loader.section_dict(getattr(self, s.name)) for s in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """A (partial) mapping as ``to_dict`` writes it; missing keys take the defaults. Each
        section is made once and the run config validated once."""
        return loader.build(cls, loader.rename_aliases(d) if isinstance(d, dict) else d, "")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(loader.read_config_file(path))
