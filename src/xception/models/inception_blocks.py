"""The rows of Inception V3's table (``inception.inception_table``) and the modules built from them.

A row (``StageSpec``) is a stem conv, a stem max-pool or a mixed block; a mixed block is branches
(``Branch``) whose outputs are concatenated along the channels; a branch is an optional pool, then
convs (``ConvSpec``) in sequence, then optionally convs side by side on the last output
(InceptionE's 1x3 and 3x1 pairs). Every conv is torchvision's ``BasicConv2d``: conv without bias ->
BatchNorm -> ReLU, under torchvision's module names, so the state-dict keys are torchvision's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import batch_norm

POOLS: tuple[str, ...] = ("avg", "max")


@dataclass(frozen=True)
class ConvSpec:
    """One ``BasicConv2d``; ``name`` is its module name (torchvision's)."""

    name: str
    out_channels: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return tuple((n + 2 * p - k) // self.stride + 1  # type: ignore[return-value]
                     for n, k, p in zip(size, self.kernel, self.padding, strict=True))


@dataclass(frozen=True)
class Branch:
    """[pool] -> convs in sequence -> [convs side by side on the last output, concatenated].

    ``pool`` runs before the convs: "avg" is torchvision's 3x3 stride 1 padding 1 average (the
    zero padding counts, ``count_include_pad=True``), "max" a 3x3 stride 2 unpadded max-pool.
    """

    convs: tuple[ConvSpec, ...] = ()
    pool: str | None = None
    split: tuple[ConvSpec, ...] = ()

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        if self.pool == "max":
            size = tuple((n - 3) // 2 + 1 for n in size)  # type: ignore[assignment]
        for conv in self.convs:
            size = conv.out_size(size)
        return self.split[0].out_size(size) if self.split else size


@dataclass(frozen=True)
class StageSpec:
    """One row of the table: a module of the network, by torchvision's name."""

    name: str                      # the module's name, and its state-dict prefix
    kind: str                      # "conv", "max_pool" or "inception_a" ... "inception_e"
    group: str                     # "stem", "35x35", "17x17", "8x8" or the reduction between
    widths: tuple[int, ...]        # output channels per branch; concatenated for a mixed block
    branches: tuple[Branch, ...]   # a stem conv: one branch of one conv; a max-pool: one pool

    @property
    def out_channels(self) -> int:
        return sum(self.widths)

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output height and width for an input of ``size`` (every branch gives the same)."""
        return self.branches[0].out_size(size)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN -> ReLU: torchvision's unit, with its ``conv``/``bn`` names."""

    def __init__(self, in_channels: int, spec: ConvSpec, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                              padding=spec.padding, bias=False)
        self.bn = batch_norm(spec.out_channels, bn_eps, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionBlock(nn.Module):
    """A mixed block (InceptionA ... E): every branch on the same input, outputs concatenated.

    The convs are children under their torchvision names (``branch1x1``, ``branch5x5_1``, ...), in
    torchvision's order; ``forward`` runs the branches in the table's order, which is torchvision's
    concatenation order.
    """

    def __init__(self, spec: StageSpec, in_channels: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.branches = spec.branches
        for branch in spec.branches:
            channels = in_channels
            for conv in branch.convs:
                self.add_module(conv.name, BasicConv2d(channels, conv, bn_eps, bn_momentum))
                channels = conv.out_channels
            for conv in branch.split:
                self.add_module(conv.name, BasicConv2d(channels, conv, bn_eps, bn_momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for branch in self.branches:
            out = x
            if branch.pool == "avg":
                out = F.avg_pool2d(out, kernel_size=3, stride=1, padding=1)
            elif branch.pool == "max":
                out = F.max_pool2d(out, kernel_size=3, stride=2)
            for conv in branch.convs:
                out = getattr(self, conv.name)(out)
            if branch.split:
                outputs += [getattr(self, conv.name)(out) for conv in branch.split]
            else:
                outputs.append(out)
        return torch.cat(outputs, 1)


def build_stage(spec: StageSpec, in_channels: int, bn_eps: float, bn_momentum: float) -> nn.Module:
    """The module of one row: a ``BasicConv2d``, torchvision's stem max-pool, or a mixed block."""
    if spec.kind == "conv":
        return BasicConv2d(in_channels, spec.branches[0].convs[0], bn_eps, bn_momentum)
    if spec.kind == "max_pool":
        return nn.MaxPool2d(kernel_size=3, stride=2)
    return InceptionBlock(spec, in_channels, bn_eps, bn_momentum)
