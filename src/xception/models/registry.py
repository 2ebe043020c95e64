"""Named models: ``create_model(name, **overrides)`` as in timm, plus rebuilding from saved configs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from torch import nn

from ..errors import ConfigError
from .aligned import ALIGNED
from .inception import InceptionConfig, InceptionV3
from .xception import Xception, XceptionConfig

# The paper's model: exactly Keras' Xception (22,855,952 trainable parameters with 1000 classes).
XCEPTION = XceptionConfig()

# Same 14-module block structure for 32 px images (digits, CIFAR): the stem keeps the resolution
# (stride 1, "same" padding) so four stride-2 stages leave a 2x2 map, and the widths are ~1/3 of
# the paper's so a CPU trains it in minutes. BN momentum 0.1: a few hundred steps are too few
# for running statistics that move 1% per step (Keras' 0.99) to catch up.
XCEPTION_SMALL = XceptionConfig(
    num_classes=10, stem_channels=(16, 32), stem_stride=1, stem_padding="tf_same",
    entry_channels=(64, 128, 256), middle_channels=256, exit_channels=(256, 512),
    final_channels=(768, 1024), min_input_size=16, bn_momentum=0.1)

# xception_small at a quarter to half of its widths (same blocks: entry, middle x8, exit), 0.70 M
# parameters: the main job's model (``xception train`` on the digits) and, at these or half these
# widths, the experiments' budget model (experiments/budget.py), where a CPU trains hundreds.
# Its stem convs are unpadded, as in the paper: 28 px digits reach the exit flow at 2x2 for fewer
# multiply-adds than the padded stem at 32 px (how many fewer: benchmarks/RESULTS.md, "Figures
# moved out of code comments").
XCEPTION_TINY = replace(
    XCEPTION_SMALL, stem_padding="valid", stem_channels=(16, 16), entry_channels=(32, 64, 128),
    middle_channels=128, exit_channels=(128, 256), final_channels=(256, 256))

INCEPTION_V3 = InceptionConfig()

_CONFIGS: dict[str, Any] = {
    "xception": XCEPTION,
    "xception_small": XCEPTION_SMALL,
    "xception_tiny": XCEPTION_TINY,
    "inception_v3": INCEPTION_V3,
    **ALIGNED,  # DeepLab's aligned Xception 41/65/71, timm's names
}
_BUILDERS: dict[type, Callable[[Any], nn.Module]] = {
    XceptionConfig: Xception,
    InceptionConfig: InceptionV3,
}


def list_models() -> list[str]:
    return sorted(_CONFIGS)


def model_config(name: str, **overrides: Any) -> XceptionConfig | InceptionConfig:
    """The validated config of a named model with ``overrides`` applied (builds no weights)."""
    if name not in _CONFIGS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = _CONFIGS[name]
    valid = [f.name for f in fields(base)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"{name!r} has no setting(s) {unknown}; valid: {valid}")
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(base, **tupled)


def build_model(cfg: XceptionConfig | InceptionConfig) -> nn.Module:
    """The network a config describes."""
    return _BUILDERS[type(cfg)](cfg)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a named model, e.g. ``create_model("xception", num_classes=10, residual=False)``."""
    return build_model(model_config(name, **overrides))


def arch_of(cfg: XceptionConfig | InceptionConfig) -> str:
    """The family name stored with saved weights, so they can be rebuilt."""
    return "xception" if isinstance(cfg, XceptionConfig) else "inception_v3"
