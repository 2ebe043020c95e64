"""Xception (Chollet 2017, Figure 5) as a block table plus one generic block.

Read ``block_table`` next to the paper's figure: entry flow (stem + blocks 2-4), middle flow
(block 5-12: eight identical residual blocks), exit flow (block 13 with a residual, block 14 without).
Every switch of the paper's ablations and open questions is a field of ``XceptionConfig``; so are
DeepLab's "aligned" changes (three separable convs per entry block, stride-2 separable convs instead
of max-pools, BN inside the separable convs, dilation for an output stride of 8 or 16), whose named
configs live in ``aligned.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from functools import cached_property

import torch
from torch import nn

from ..errors import ConfigError
from .layers import (
    ACTIVATIONS,
    ORDERS,
    PADDINGS,
    ClassifierHead,
    Conv2d,
    HeadMixin,
    MaxPool2d,
    SpectrumConv,
    batch_norm,
    check_choice,
    check_images,
    check_segments,
    is_positive_int,
)
from .recompute import checkpointed

DOWNSAMPLES: tuple[str, ...] = ("max_pool", "strided_conv")


@dataclass(frozen=True)
class XceptionConfig:
    """Everything that defines an Xception-family network. Defaults are the paper's ImageNet model."""

    num_classes: int = 1000
    in_chans: int = 3
    # entry flow: stem (block1), then one downsampling residual block per width
    stem_channels: tuple[int, int] = (32, 64)
    stem_stride: int = 2                      # 1 in the small variant: 32 px inputs survive
    stem_padding: str = "valid"               # the paper's stem convs are unpadded
    entry_channels: tuple[int, ...] = (128, 256, 728)
    # middle flow: `middle_repeats` blocks of three separable convs
    middle_channels: int = 728
    middle_repeats: int = 8
    # exit flow: one downsampling residual block, then separable convs without residual
    exit_channels: tuple[int, ...] = (728, 1024)
    final_channels: tuple[int, ...] = (1536, 2048)
    # how blocks downsample; the aligned variants (DeepLab) change these
    entry_convs: int = 2                      # separable convs per entry-flow block (3 when aligned)
    entry_strides: tuple[int, ...] = ()       # stride of each entry block; () = 2 for every one
    downsample: str = "max_pool"              # or "strided_conv": the last separable conv has stride 2
    final_mid_relu: bool = False              # ReLU inside the last block's separable convs (aligned)
    output_stride: int = 32                   # 16 or 8: later strides turn into dilation (dense tasks)
    # the paper's ablations and the spectrum, applied to every separable conv
    residual: bool = True
    segments: int | None = None               # None = depthwise (one segment per channel)
    order: str = "depthwise_first"            # or "pointwise_first" ("Extreme Inception")
    mid_activation: str | None = None         # None (paper's best), "elu" or "relu"
    mid_norm: bool = False                    # BatchNorm between the two ops (Inception style)
    bottleneck_ratio: int = 1                 # inner convs of residual blocks: width / ratio
    # numerics that decide whether we compute the same function as Keras
    padding: str = "tf_same"                  # "tf_same" (Keras) or "symmetric" (timm/Cadene)
    bn_eps: float = 1e-3                      # Keras; timm's port uses 1e-5
    bn_momentum: float = 0.01                 # PyTorch convention: Keras momentum 0.99
    # head
    fc_layers: tuple[int, ...] = ()           # (4096, 4096) in the paper's JFT runs
    dropout: float = 0.0                      # the paper's ImageNet recipe sets 0.5
    min_input_size: int = 71                  # Keras' rule for Xception

    def __post_init__(self) -> None:
        check_choice("padding", self.padding, PADDINGS)
        check_choice("stem_padding", self.stem_padding, PADDINGS)
        check_choice("order", self.order, ORDERS)
        check_choice("mid_activation", self.mid_activation, ACTIVATIONS)
        widths = (*self.stem_channels, *self.entry_channels, self.middle_channels,
                  *self.exit_channels, *self.final_channels, self.in_chans)
        if not all(is_positive_int(width) for width in widths):
            raise ConfigError(f"channel widths must be positive integers, got {widths}")
        if len(self.stem_channels) != 2:
            raise ConfigError(f"stem_channels takes two widths, got {self.stem_channels!r}")
        if not self.entry_channels or not self.exit_channels or not self.final_channels:
            raise ConfigError("entry_channels, exit_channels and final_channels need a width each")
        check_choice("downsample", self.downsample, DOWNSAMPLES)
        check_choice("output_stride", self.output_stride, (8, 16, 32))
        if self.output_stride < 32 and self.downsample != "strided_conv":
            raise ConfigError(f"output_stride={self.output_stride} needs downsample='strided_conv' "
                              "(the aligned variants): a max-pool has no dilated form")
        if not isinstance(self.entry_convs, int) or self.entry_convs < 1:
            raise ConfigError(f"entry_convs must be a positive integer, got {self.entry_convs!r}")
        if self.entry_strides and (len(self.entry_strides) != len(self.entry_channels)
                                   or any(stride not in (1, 2) for stride in self.entry_strides)):
            raise ConfigError(f"entry_strides={self.entry_strides!r} needs one stride (1 or 2) per "
                              f"entry block ({len(self.entry_channels)}), or () for all 2")
        if not isinstance(self.middle_repeats, int) or self.middle_repeats < 0:
            raise ConfigError(f"middle_repeats must be an integer >= 0, got {self.middle_repeats!r}")
        if not isinstance(self.bottleneck_ratio, int) or self.bottleneck_ratio < 1:
            raise ConfigError(f"bottleneck_ratio must be an integer >= 1, got {self.bottleneck_ratio!r}")
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if self.segments is not None:  # SpectrumConv's rule, for every spatial conv of the table
            check_segments(self.segments, self.spatial_channels(),
                           "the channels of every separable conv's spatial part")

    def spatial_channels(self) -> set[int]:
        """Channel counts the spatial (kxk) convs see: what ``segments`` has to divide."""
        channels, seen = self.stem_channels[1], set()
        for specs in self.blocks.values():
            for width in (width for spec in specs for width in spec.widths):
                seen.add(channels if self.order == "depthwise_first" else width)
                channels = width
        return seen

    @cached_property
    def blocks(self) -> dict[str, list[BlockSpec]]:
        """``block_table(self)``, built once per config: validation and the model both read it."""
        return block_table(self)

    def to_dict(self) -> dict:
        """The fields (``models.model_config(name, **d)`` builds the config back from it)."""
        return asdict(self)


@dataclass(frozen=True)
class BlockSpec:
    """One row of the block table: [ReLU -> SeparableConv -> BN] per width, then pool and add."""

    name: str
    widths: tuple[int, ...]       # output channels of each separable conv
    downsample: bool              # halve the resolution; the shortcut is a 1x1/2 conv + BN
    residual: bool                # add the shortcut (identity when the shape is kept)
    relu_first: bool = True       # block2 and block14 start without one (their input is fresh)
    relu_last: bool = False       # block14 ends with one
    strided_conv: bool = False    # downsample by the last separable conv (aligned), not a max-pool
    dilation: int = 1             # of every separable conv: > 1 past the output stride
    mid_relu: bool = False        # ReLU between depthwise and pointwise (aligned final block)


def block_table(config: XceptionConfig) -> dict[str, list[BlockSpec]]:
    """The paper's Figure 5 as data: flow name -> its blocks (block1 is the stem)."""
    reduction, dilation = config.stem_stride, 1
    strided_conv = config.downsample == "strided_conv"

    def block(name: str, widths: tuple[int, ...], stride: int, **fields) -> BlockSpec:
        # aligned nets: past the output stride a block keeps its resolution, later ones dilate
        nonlocal reduction, dilation
        spec_dilation = dilation
        if strided_conv and stride > 1 and reduction * stride > config.output_stride:
            dilation, stride = dilation * stride, 1
        reduction *= stride
        fields.setdefault("residual", config.residual)
        return BlockSpec(name, widths, downsample=stride > 1, dilation=spec_dilation,
                         strided_conv=strided_conv, **fields)

    def squeeze(widths: tuple[int, ...]) -> tuple[int, ...]:
        # open question 3: residual blocks whose inner pointwise convs compress the channels
        return (*(max(1, width // config.bottleneck_ratio) for width in widths[:-1]), widths[-1])

    strides = config.entry_strides or (2,) * len(config.entry_channels)
    entry = [block(f"block{2 + i}", squeeze((width,) * config.entry_convs), stride, relu_first=i > 0)
             for i, (width, stride) in enumerate(zip(config.entry_channels, strides, strict=True))]
    block_number = 2 + len(entry)
    middle_width = config.middle_channels
    middle = [block(f"block{block_number + i}", squeeze((middle_width,) * 3), 1)
              for i in range(config.middle_repeats)]
    block_number += config.middle_repeats
    exit_flow = [block(f"block{block_number}", squeeze(config.exit_channels), 2),
                 block(f"block{block_number + 1}", config.final_channels, 1, residual=False,
                       relu_first=False, relu_last=True, mid_relu=config.final_mid_relu)]
    return {"entry_flow": entry, "middle_flow": middle, "exit_flow": exit_flow}


class Stem(nn.Module):
    """block1: Conv 3x3 (stride 2 in the paper) -> BN -> ReLU -> Conv 3x3 -> BN -> ReLU."""

    def __init__(self, config: XceptionConfig) -> None:
        super().__init__()
        first, second = config.stem_channels
        self.conv1 = Conv2d(config.in_chans, first, 3, stride=config.stem_stride,
                            padding=config.stem_padding)
        self.bn1 = batch_norm(first, config.bn_eps, config.bn_momentum)
        self.conv2 = Conv2d(first, second, 3, padding=config.stem_padding)
        self.bn2 = batch_norm(second, config.bn_eps, config.bn_momentum)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(x)))


class Shortcut(nn.Module):
    """The residual branch of a block that changes shape: Conv 1x1 (stride 2) -> BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 config: XceptionConfig) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, 1, stride=stride, padding=config.padding)
        self.bn = batch_norm(out_channels, config.bn_eps, config.bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class XceptionBlock(nn.Module):
    """[ReLU] -> SepConv -> BN, once per width -> [MaxPool 3x3/2] -> [+ shortcut] -> [ReLU].

    Aligned blocks downsample with the last SepConv's stride instead of the max-pool.
    """

    def __init__(self, spec: BlockSpec, in_channels: int, config: XceptionConfig) -> None:
        super().__init__()
        self.spec = spec
        self.acts = nn.ModuleList()
        self.sepconvs = nn.ModuleList()
        self.bns = nn.ModuleList()
        channels = in_channels
        pool = spec.downsample and not spec.strided_conv
        for i, width in enumerate(spec.widths):
            # the block's input is also the residual: only later ReLUs may work in place
            relu = nn.ReLU(inplace=i > 0) if i > 0 or spec.relu_first else nn.Identity()
            self.acts.append(relu)
            last_strided = spec.downsample and not pool and i == len(spec.widths) - 1
            self.sepconvs.append(SpectrumConv(
                channels, width, 3, stride=2 if last_strided else 1, dilation=spec.dilation,
                segments=config.segments, order=config.order,
                mid_activation="relu" if spec.mid_relu else config.mid_activation,
                mid_norm=config.mid_norm, padding=config.padding, norm_eps=config.bn_eps,
                norm_momentum=config.bn_momentum))
            self.bns.append(batch_norm(width, config.bn_eps, config.bn_momentum))
            channels = width
        self.pool = MaxPool2d(3, 2, config.padding) if pool else nn.Identity()
        self.shortcut: nn.Module | None = None
        if spec.residual and (spec.downsample or in_channels != channels):
            self.shortcut = Shortcut(in_channels, channels, 2 if spec.downsample else 1, config)
        elif spec.residual:
            self.shortcut = nn.Identity()
        self.act_out = nn.ReLU(inplace=True) if spec.relu_last else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for activation, conv, norm in zip(self.acts, self.sepconvs, self.bns, strict=True):
            out = norm(conv(activation(out)))
        out = self.pool(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act_out(out)


class Xception(HeadMixin, nn.Module):
    """Xception with the timm model API: forward_features / forward_head / reset_classifier."""

    def __init__(self, config: XceptionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or XceptionConfig()
        self.stem = Stem(config)
        channels, reduction = config.stem_channels[1], config.stem_stride
        self.feature_info = [dict(num_chs=channels, reduction=reduction, module="stem")]
        for flow, specs in config.blocks.items():
            blocks = OrderedDict()
            for spec in specs:
                blocks[spec.name] = XceptionBlock(spec, channels, config)
                channels = spec.widths[-1]
                reduction *= 2 if spec.downsample else 1
                self.feature_info.append(dict(num_chs=channels, reduction=reduction,
                                              module=f"{flow}.{spec.name}"))
            setattr(self, flow, nn.Sequential(blocks))
        self.num_features = channels
        self.head = ClassifierHead(channels, config.num_classes, config.fc_layers, config.dropout)
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # fan_in is right for grouped convs too (PyTorch's fan_out is not)
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (timm's API):
        training memory drops to about the block inputs, for roughly one more forward pass."""
        self.grad_checkpointing = enable

    def _run_blocks(self, x: torch.Tensor,
                    outputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The stem's output ``x`` through every block (entry, middle, exit flow); the output.

        The one place grad checkpointing applies: while it is on and gradients are taken, each
        block runs through ``recompute.checkpointed``. ``outputs``, if given, gets every block's
        output appended (``forward_stages``). Otherwise, and not checkpointing, the three flows
        are called as the ``nn.Sequential`` modules they are: the same per-block loop, and each
        flow's own module call (its hooks, its scope in a trace) stays.
        """
        checkpointing = self.grad_checkpointing and torch.is_grad_enabled()
        if outputs is None and not checkpointing:
            return self.exit_flow(self.middle_flow(self.entry_flow(x)))
        for flow in (self.entry_flow, self.middle_flow, self.exit_flow):
            for block in flow:
                x = checkpointed(block, x) if checkpointing else block(x)
                if outputs is not None:
                    outputs.append(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of the stem and of every block, in ``feature_info`` order (dense prediction)."""
        check_images(x, self.config.in_chans, self.config.min_input_size)
        outputs = [self.stem(x)]
        self._run_blocks(outputs[0], outputs)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.config.in_chans, self.config.min_input_size)
        return self._run_blocks(self.stem(x))

    def set_numerics(self, padding: str | None = None, stem_padding: str | None = None,
                     bn_eps: float | None = None) -> None:
        """Change the padding rules and BatchNorm epsilon in place; the weights stay as they are.

        Ported weights compute the function they were trained as only with their source's numerics
        (Keras: TF "same", eps 1e-3; timm's legacy port: symmetric, eps 1e-5): the loaders call this.
        """
        given = {"padding": padding, "stem_padding": stem_padding, "bn_eps": bn_eps}
        config = replace(self.config, **{setting: value for setting, value in given.items()
                                         if value is not None})
        for name, module in self.named_modules():
            if isinstance(module, (Conv2d, MaxPool2d)):
                module.set_padding(config.stem_padding if name.startswith("stem.") else config.padding)
            elif isinstance(module, nn.BatchNorm2d):
                module.eps = config.bn_eps
        self.config = config
