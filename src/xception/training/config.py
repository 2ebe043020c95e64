"""The run configuration: frozen, typed sections, JSON round trip and ``--set key=value`` overrides.

Everything a run does is decided here, before any work starts, so a typo in a key or a bad value
fails in the first second with the valid choices listed, not after an hour of training. A
``RunConfig`` is validated when it is made and cannot be changed afterwards (``dataclasses.replace``
or ``apply_overrides`` make a new, validated one), so what was checked is what runs. The ``model``
section is parsed into the model's own config dataclass at the same moment (``cfg.model.config``).
Every float field (the model's too) must be finite: ``Infinity``/``NaN`` (JSON) are refused by
name. Sections: model, data, optimizer (``optim`` is accepted as an alias), schedule, train.
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..data import DataSection
from ..data.build import DATASETS
from ..distributed import world_size
from ..errors import ConfigError
from ..models import InceptionConfig, XceptionConfig, model_config

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
        for f in fields(self.config):  # the model's own float fields (bn_eps, dropout, ...)
            value = getattr(self.config, f.name)
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"model.{f.name} must be a finite number, got {_show(value)}")

    @property
    def config(self) -> ModelConfig:
        """The parsed, validated model config (``XceptionConfig`` or ``InceptionConfig``)."""
        return self._config  # type: ignore[attr-defined]

    def for_data(self, num_classes: int, in_chans: int) -> ModelConfig:
        """``config`` with the dataset's class and channel counts, where the run did not set them."""
        given = {"num_classes": num_classes, "in_chans": in_chans}
        changes = {k: v for k, v in given.items()
                   if k not in self.overrides and getattr(self.config, k) != v}
        return replace(self.config, **changes) if changes else self.config


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


@dataclass(frozen=True)
class ScheduleSection:
    name: str = "cosine"          # cosine (linear warm-up, cosine decay) | step | constant
    warmup_fraction: float = 0.15  # of all steps (cosine and step)
    decay_rate: float = 0.94      # step: lr *= decay_rate every decay_every decay_units
    decay_every: float = 2.0
    decay_unit: str = "epochs"    # epochs | samples | steps


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
    keep_checkpoint: bool = True  # keep checkpoint.pt after a finished run (to extend it later)
    max_nonfinite: int = 5        # abort after this many non-finite losses in a row
    progress: bool = True         # tqdm on a terminal, log lines every log_every steps otherwise
    log_every: int = 100
    tensorboard: bool = False     # also write TensorBoard scalars to <run>/tensorboard
    dist_backend: str = "auto"    # torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo


@dataclass(frozen=True)
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def optim(self) -> OptimizerSection:
        """The old name of the ``optimizer`` section, kept for callers written against it."""
        return self.optimizer

    def to_dict(self) -> dict:
        """Plain, JSON-ready values (what ``config.json`` holds; ``from_dict`` reads it back)."""
        return {s.name: {f.name: _plain(getattr(getattr(self, s.name), f.name))
                         for f in fields(getattr(self, s.name))} for s in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        if isinstance(d, dict):
            d = rename_aliases(d)
        return _build(cls, d, "")  # validated as it is made

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> Any:
    """The JSON value of a config file (``--config``, a run's ``config.json``), or a one-line
    ConfigError: missing, unreadable, not UTF-8 or not JSON. Not validated: see ``RunConfig.load``."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"config file {str(path)!r} is not readable JSON/UTF-8: {e}") from None


SECTION_ALIASES = {"optim": "optimizer"}

CHOICES: dict[str, tuple] = {
    "data.name": DATASETS,
    "optimizer.name": ("sgd", "adamw", "rmsprop"),
    "schedule.name": ("cosine", "step", "constant"),
    "schedule.decay_unit": ("epochs", "samples", "steps"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.dist_backend": ("auto", "nccl", "gloo"),
}

# (key, test, what it must be): checked after every change, so nothing runs with a bad value
_RANGES: list[tuple[str, Any, str]] = [
    ("data.image_size", lambda v: v >= 8, ">= 8"),
    ("data.val_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.train_subset", lambda v: v >= 0, ">= 0"),
    ("data.val_subset", lambda v: v >= 0, ">= 0"),
    ("data.min_crop_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data.crop_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.prefetch_factor", lambda v: v >= 1, ">= 1"),
    ("data.max_bad_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optimizer.lr", lambda v: v > 0, "> 0"),
    ("optimizer.lr_reference_batch", lambda v: v >= 0, ">= 0"),
    ("optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optimizer.alpha", lambda v: 0 < v < 1, "in (0, 1)"),
    ("optimizer.eps", lambda v: v > 0, "> 0"),
    ("optimizer.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.clip_grad_norm", lambda v: v >= 0, ">= 0"),
    ("schedule.warmup_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("schedule.decay_rate", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("schedule.decay_every", lambda v: v > 0, "> 0"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.max_steps", lambda v: v >= 0, ">= 0"),
    ("train.batch_size", lambda v: v >= 1, ">= 1"),
    ("train.accum_steps", lambda v: v >= 1, ">= 1"),
    ("train.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.threads", lambda v: v >= 0, ">= 0"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.checkpoint_every", lambda v: v >= 0, ">= 0"),
    ("train.bn_recalibration", lambda v: v >= 0, ">= 0 (training batches; 0 = off)"),
    ("train.max_nonfinite", lambda v: v >= 1, ">= 1"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
]


def validate(cfg: RunConfig) -> None:
    """Reject out-of-range values and combinations that cannot work, naming the key.

    Runs once, when a ``RunConfig`` is made. Under torchrun the process count is known then
    (``WORLD_SIZE``), so a global batch that does not split over the processes fails here too.
    """
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()}
    for key in _float_keys():  # NaN and inf pass or fail range tests by accident; name them here
        value = flat[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    for key, ok, what in _RANGES:
        if not ok(flat[key]):
            raise ConfigError(f"{key} must be {what}, got {flat[key]!r}")
    tc, world = cfg.train, world_size()
    if tc.batch_size % (world * tc.accum_steps):
        raise ConfigError(f"train.batch_size={tc.batch_size} (global) must be divisible by "
                          f"{world} process(es) x train.accum_steps={tc.accum_steps}")
    size, least = cfg.data.image_size, cfg.model.config.min_input_size
    if size < least:
        raise ConfigError(f"data.image_size={size}: input {size}x{size} is smaller than "
                          f"{cfg.model.name}'s minimum of {least}x{least}; set data.image_size "
                          f"to at least {least}")


@functools.cache
def _float_keys() -> tuple[str, ...]:
    """``section.field`` of every float field of the run config (``float`` or ``float | None``)."""
    keys = []
    for section in fields(RunConfig):
        sec_cls = typing.get_type_hints(RunConfig)[section.name]
        for name, hint in typing.get_type_hints(sec_cls).items():
            if hint is float or float in typing.get_args(hint):
                keys.append(f"{section.name}.{name}")
    return tuple(keys)


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened for a one-line message (a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value  # a ReadOnlyDict as a plain dict


def rename_aliases(d: dict) -> dict:
    d = dict(d)
    for old, new in SECTION_ALIASES.items():
        if old in d:
            if new in d:
                raise ConfigError(f"config has both {old!r} and {new!r}; use {new!r} only")
            d[new] = d.pop(old)
    return d


def _build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(d).__name__}")
    valid = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {[where + k for k in unknown]}; "
                          f"valid: {[where + k for k in valid]}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        key, hint = where + name, hints[name]
        if is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _check_value(key, value, hint)
    return cls(**kwargs)


def _check_value(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str)}
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint in ok and not ok[hint](value):
        raise ConfigError(f"{key} must be {hint.__name__}, got {_show(value)}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(CHOICES[key])}")
    if hint is float:
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{key} must be a finite number, got {_show(value)}") from None
        if not math.isfinite(value):  # JSON's Infinity/NaN, or 1e999
            raise ConfigError(f"{key} must be a finite number, got {_show(value)}")
    return value


def parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:  # not JSON (or an integer past Python's digit limit): the text itself
        return text


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings; ``model.<field>=v`` goes to the model's overrides."""
    d = cfg.to_dict()
    for item in assignments:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        section, name = parts
        section = SECTION_ALIASES.get(section, section)
        if section not in d:
            raise ConfigError(f"unknown section {parts[0]!r} in {item!r}; valid: {list(d)}")
        if section == "model" and name not in d["model"]:
            d["model"]["overrides"][name] = parse_value(raw)
        else:
            if name not in d[section]:
                raise ConfigError(f"unknown key {key!r}; valid: "
                                  f"{[f'{section}.{k}' for k in d[section]]}")
            value = parse_value(raw)
            if isinstance(d[section][name], str) and not isinstance(value, str):
                value = raw  # a text field keeps the text as typed (data.val_split=2012)
            d[section][name] = value
    return RunConfig.from_dict(d)
