"""Inception V3 (Szegedy et al. 2016, Figure 5 and Table 1), the paper's baseline, as a table.

``inception_table(config)`` is the architecture as data and reads like torchvision's
``Inception3``: the stem (``Conv2d_1a_3x3`` ... ``Conv2d_4a_3x3`` with two 3x3/2 max-pools), the
35x35 group (``Mixed_5b/5c/5d``: InceptionA, pool features 32/64/64), the grid reduction
``Mixed_6a`` (InceptionB), the 17x17 group (``Mixed_6b`` ... ``6e``: InceptionC with 7x7 channels
128/160/160/192), the reduction ``Mixed_7a`` (InceptionD), the 8x8 group (``Mixed_7b/7c``:
InceptionE), then our ``ClassifierHead`` (global average pool -> optional FC layers -> dropout ->
linear). ``inception_blocks.py`` holds the row types and builds the modules; the auxiliary tower
is not built.

At ``width=1`` with the default stem the network is torchvision's ``inception_v3(aux_logits=False,
transform_input=False)``: the same parameter and buffer names and shapes, so its ``state_dict()``
loads directly (``fc.*`` goes to ``head.classifier.*``, ``AuxLogits.*`` is dropped), and the same
function. torchvision's ImageNet weights were trained on images scaled to [-1, 1] (its
``transform_input`` converts ImageNet-normalised input to that); this model takes its input as is.

Small inputs: ``stem_stride=1`` and ``stem_pools=False`` keep the stem from dividing the resolution
by 8, so a 28-32 px image reaches every group with room to spare. The map size (height = width)
each group sees, and the smallest input the network takes:

    stem options                                  input   35x35  17x17  8x8   smallest input
    default (stride 2, both pools)                299 px  35     17     8     75
    default                                       75 px   7      3      1     75
    stem_stride=1, stem_pools=False               32 px   26     12     5     13
    the same and stem_padding="symmetric"         32 px   32     15     7     7

(``InceptionConfig.map_sizes`` gives every module's output size.) ``min_input_size`` (75,
torchvision's rule) must be at least ``smallest_input()``: set it, e.g. to 28 or 32, with the
small-input options.

Weight init follows torchvision's ``init_weights=True``: every conv is drawn from a normal
distribution with std 0.1 (truncated at +-2), BatchNorm starts at weight 1, bias 0. The head's
linear layers keep PyTorch's default, as in Xception and after ``reset_classifier``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property

import torch
from torch import nn

from ..errors import ConfigError
from .inception_blocks import Branch, ConvSpec, StageSpec, build_stage
from .layers import ClassifierHead, HeadMixin, check_choice, check_images, is_positive_int

STEM_PADDINGS: tuple[str, ...] = ("valid", "symmetric")


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class InceptionConfig:
    """Everything that defines the Inception V3 baseline. Defaults are torchvision's model."""

    num_classes: int = 1000
    in_chans: int = 3
    # multiplies every conv's output channels (BatchNorm follows): the nearest integer, at least 1.
    # Multiples of 1, not 8: at 0.5 every width halves exactly (torchvision's are multiples of 16)
    width: float = 1.0
    # small inputs (module docstring): Conv2d_1a_3x3's stride, the stem's two 3x3/2 max-pools, and
    # the padding of the stem's unpadded 3x3 convs (1a, 2a, 4a; "symmetric" pads them by 1)
    stem_stride: int = 2
    stem_pools: bool = True
    stem_padding: str = "valid"
    bn_eps: float = 1e-3                  # torchvision's BasicConv2d
    bn_momentum: float = 0.1              # PyTorch's default, which torchvision keeps
    # head
    fc_layers: tuple[int, ...] = ()
    dropout: float = 0.0
    min_input_size: int = 75              # torchvision's rule; at least smallest_input()

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) \
                or self.num_classes < 0:
            raise ConfigError(f"num_classes must be an integer >= 0, got {self.num_classes!r}")
        if not is_positive_int(self.in_chans):
            raise ConfigError(f"in_chans must be a positive integer, got {self.in_chans!r}")
        if not _is_real(self.width) or self.width <= 0:
            raise ConfigError(f"width must be a number > 0 (1.0 is torchvision's), got {self.width!r}")
        if not is_positive_int(self.stem_stride):
            raise ConfigError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        check_choice("stem_stride", self.stem_stride, (1, 2))
        if not isinstance(self.stem_pools, bool):
            raise ConfigError(f"stem_pools must be true or false, got {self.stem_pools!r}")
        check_choice("stem_padding", self.stem_padding, STEM_PADDINGS)
        if not _is_real(self.bn_eps) or self.bn_eps <= 0:
            raise ConfigError(f"bn_eps must be a number > 0, got {self.bn_eps!r}")
        if not _is_real(self.bn_momentum) or not 0 < self.bn_momentum <= 1:
            raise ConfigError(f"bn_momentum must be a number in (0, 1], got {self.bn_momentum!r}")
        if not isinstance(self.fc_layers, tuple) or not all(map(is_positive_int, self.fc_layers)):
            raise ConfigError(f"fc_layers must be a tuple of positive integers, got {self.fc_layers!r}")
        if not _is_real(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not is_positive_int(self.min_input_size):
            raise ConfigError(f"min_input_size must be a positive integer, got {self.min_input_size!r}")
        smallest = self.smallest_input()
        if self.min_input_size < smallest:
            raise ConfigError(f"min_input_size={self.min_input_size} is below {smallest}, the smallest "
                              "input for which this stem and the grid reductions leave every map at "
                              "least 1x1")

    def scaled(self, channels: int) -> int:
        """``channels`` times ``width``: the nearest integer (halves up), at least 1."""
        return max(1, math.floor(channels * self.width + 0.5))

    @cached_property
    def stages(self) -> tuple[StageSpec, ...]:
        """``inception_table(self)``, built once per config: validation and the model both read it."""
        return inception_table(self)

    def map_sizes(self, size: int | tuple[int, int]) -> dict[str, tuple[int, int]]:
        """Output (height, width) of every module for an input of ``size``, without building one."""
        hw = (size, size) if isinstance(size, int) else tuple(size)
        sizes = {}
        for spec in self.stages:
            hw = sizes[spec.name] = spec.out_size(hw)
        return sizes

    def smallest_input(self) -> int:
        """The smallest square input for which every module's output is at least 1x1."""
        size = 1
        while min(min(hw) for hw in self.map_sizes(size).values()) < 1:
            size += 1
        return size

    def to_dict(self) -> dict:
        """The fields (``models.model_config(name, **d)`` builds the config back from it)."""
        return asdict(self)


Conv = Callable[..., ConvSpec]  # conv(name, out_channels, kernel, stride=1, padding=0)


def inception_a(conv: Conv, pool_features: int) -> tuple[Branch, ...]:
    return (Branch((conv("branch1x1", 64, 1),)),
            Branch((conv("branch5x5_1", 48, 1), conv("branch5x5_2", 64, 5, padding=2))),
            Branch((conv("branch3x3dbl_1", 64, 1), conv("branch3x3dbl_2", 96, 3, padding=1),
                    conv("branch3x3dbl_3", 96, 3, padding=1))),
            Branch((conv("branch_pool", pool_features, 1),), pool="avg"))


def inception_b(conv: Conv) -> tuple[Branch, ...]:
    return (Branch((conv("branch3x3", 384, 3, stride=2),)),
            Branch((conv("branch3x3dbl_1", 64, 1), conv("branch3x3dbl_2", 96, 3, padding=1),
                    conv("branch3x3dbl_3", 96, 3, stride=2))),
            Branch(pool="max"))


def inception_c(conv: Conv, c7: int) -> tuple[Branch, ...]:
    return (Branch((conv("branch1x1", 192, 1),)),
            Branch((conv("branch7x7_1", c7, 1), conv("branch7x7_2", c7, (1, 7), padding=(0, 3)),
                    conv("branch7x7_3", 192, (7, 1), padding=(3, 0)))),
            Branch((conv("branch7x7dbl_1", c7, 1),
                    conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0)),
                    conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3)),
                    conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0)),
                    conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3)))),
            Branch((conv("branch_pool", 192, 1),), pool="avg"))


def inception_d(conv: Conv) -> tuple[Branch, ...]:
    return (Branch((conv("branch3x3_1", 192, 1), conv("branch3x3_2", 320, 3, stride=2))),
            Branch((conv("branch7x7x3_1", 192, 1),
                    conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3)),
                    conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0)),
                    conv("branch7x7x3_4", 192, 3, stride=2))),
            Branch(pool="max"))


def inception_e(conv: Conv) -> tuple[Branch, ...]:
    return (Branch((conv("branch1x1", 320, 1),)),
            Branch((conv("branch3x3_1", 384, 1),),
                   split=(conv("branch3x3_2a", 384, (1, 3), padding=(0, 1)),
                          conv("branch3x3_2b", 384, (3, 1), padding=(1, 0)))),
            Branch((conv("branch3x3dbl_1", 448, 1), conv("branch3x3dbl_2", 384, 3, padding=1)),
                   split=(conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1)),
                          conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0)))),
            Branch((conv("branch_pool", 192, 1),), pool="avg"))


def inception_table(config: InceptionConfig) -> tuple[StageSpec, ...]:
    """The network as data, in forward order: torchvision's ``Inception3`` (its module names)."""
    stages: list[StageSpec] = []
    channels = config.in_chans

    def conv(name: str, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
             padding: int | tuple[int, int] = 0) -> ConvSpec:
        def pair(v: int | tuple[int, int]) -> tuple[int, int]:
            return v if isinstance(v, tuple) else (v, v)
        return ConvSpec(name, config.scaled(out_channels), pair(kernel), stride, pair(padding))

    def stage(name: str, kind: str, group: str, branches: tuple[Branch, ...]) -> None:
        nonlocal channels
        widths = tuple(sum(c.out_channels for c in b.split) if b.split
                       else b.convs[-1].out_channels if b.convs else channels  # a pool keeps them
                       for b in branches)
        stages.append(StageSpec(name, kind, group, widths, branches))
        channels = sum(widths)

    def stem_conv(name: str, out_channels: int, kernel: int, **options) -> None:
        stage(name, "conv", "stem", (Branch((conv(name, out_channels, kernel, **options),)),))

    def stem_pool(name: str) -> None:
        if config.stem_pools:
            stage(name, "max_pool", "stem", (Branch(pool="max"),))

    pad = 1 if config.stem_padding == "symmetric" else 0  # torchvision's are unpadded
    stem_conv("Conv2d_1a_3x3", 32, 3, stride=config.stem_stride, padding=pad)
    stem_conv("Conv2d_2a_3x3", 32, 3, padding=pad)
    stem_conv("Conv2d_2b_3x3", 64, 3, padding=1)
    stem_pool("maxpool1")
    stem_conv("Conv2d_3b_1x1", 80, 1)
    stem_conv("Conv2d_4a_3x3", 192, 3, padding=pad)
    stem_pool("maxpool2")
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        stage(name, "inception_a", "35x35", inception_a(conv, pool_features))
    stage("Mixed_6a", "inception_b", "reduction_17x17", inception_b(conv))
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        stage(name, "inception_c", "17x17", inception_c(conv, c7))
    stage("Mixed_7a", "inception_d", "reduction_8x8", inception_d(conv))
    for name in ("Mixed_7b", "Mixed_7c"):
        stage(name, "inception_e", "8x8", inception_e(conv))
    return tuple(stages)


def _torchvision_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: torchvision's ``fc`` is our ``head.classifier``; its auxiliary
    tower (``AuxLogits``, trained weights only) has no place here and is dropped."""
    for name in ("weight", "bias"):
        old, new = f"{prefix}fc.{name}", f"{prefix}head.classifier.{name}"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
    for key in [k for k in state_dict if k.startswith(f"{prefix}AuxLogits.")]:
        del state_dict[key]


class InceptionV3(HeadMixin, nn.Module):
    """Inception V3 without the auxiliary tower + our ``ClassifierHead``, built from the table.

    The modules are this model's children under torchvision's names, in the table's order;
    ``forward_features`` runs them in that order.
    """

    def __init__(self, config: InceptionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or InceptionConfig()
        channels = config.in_chans
        for spec in config.stages:
            self.add_module(spec.name, build_stage(spec, channels, config.bn_eps, config.bn_momentum))
            channels = spec.out_channels
        self.stage_names = tuple(spec.name for spec in config.stages)
        self.num_features = channels
        self.head = ClassifierHead(channels, config.num_classes, config.fc_layers, config.dropout)
        self._init_weights()
        self.register_load_state_dict_pre_hook(_torchvision_keys)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.1, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config.in_chans, self.config.min_input_size)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x
