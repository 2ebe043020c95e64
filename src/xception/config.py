"""The run configuration: nested dataclasses, JSON round trip and ``--set key=value`` overrides.

Everything a run does is decided here, before any work starts, so a typo in a key or a bad value
fails in the first second with the valid choices listed, not after an hour of training.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class ModelSection:
    name: str = "xception_small"
    # any field of the model's config (XceptionConfig / InceptionConfig), e.g. residual=False
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    name: str = "digits"
    image_size: int = 32          # digits are 8x8; upsampled so the 32 px model sees them
    val_fraction: float = 0.2     # held out with a fixed, stratified, seeded split
    split_seed: int = 0
    train_subset: int = 0         # >0: keep only this many training images (quick tests)
    augment: bool = True          # small random affine jitter of the training images
    num_workers: int = 0


@dataclass
class OptimSection:
    name: str = "sgd"             # "sgd" | "adamw" | "rmsprop"
    lr: float = 0.1               # peak learning rate for the global batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0


@dataclass
class ScheduleSection:
    name: str = "cosine"          # "cosine" (linear warm-up, cosine decay) | "constant"
    warmup_fraction: float = 0.15  # of all steps


@dataclass
class TrainSection:
    epochs: int = 8
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"          # "auto" | "cpu" | "cuda" | "cuda:N"
    channels_last: bool = True    # faster on CPU (oneDNN) and GPU (cuDNN) for this model
    threads: int = 0              # CPU threads; 0 = PyTorch's default (all cores)
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return _build(cls, d, "")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} is not readable JSON: {e}") from None
        return cls.from_dict(d)


CHOICES: dict[str, tuple] = {
    "data.name": ("digits",),
    "optim.name": ("sgd", "adamw", "rmsprop"),
    "schedule.name": ("cosine", "constant"),
}


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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint in ok and not ok[hint](value):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(CHOICES[key])}")
    return float(value) if hint is float else value


def parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
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
        if section not in d:
            raise ConfigError(f"unknown section {section!r} in {item!r}; valid: {list(d)}")
        if section == "model" and name not in d["model"]:
            d["model"]["overrides"][name] = parse_value(raw)
        else:
            if name not in d[section]:
                raise ConfigError(f"unknown key {key!r}; valid: "
                                  f"{[f'{section}.{k}' for k in d[section]]}")
            d[section][name] = parse_value(raw)
    return RunConfig.from_dict(d)
