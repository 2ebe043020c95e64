"""Swap a built model's blocks for fused ones: same parameters, same state dict, same function.

``fuse_model(model)`` changes the class of every ``Stem`` and every fusable ``XceptionBlock``
to a subclass whose forward uses the fused ops of ``kernels.ops`` (training and inference; a
model whose BNs were folded by ``optimize_for_inference`` fuses too, minus the BN parts):

    block input x ──► dwconv(relu(x)) ─► 1x1 ─► z1 ─► dwconv(relu(bn1(z1))) ─► 1x1 ─► z2 ─► ...
                                        (BN + ReLU applied inside the next depthwise conv)
    downsampling tail:  maxpool(bn_last(z_last)) + bn_s(conv_s(x))       (one kernel)
    middle-flow tail:   bn_last(z_last) + x                              (one kernel)

so no normalised activation is written to memory or kept for backward. On CUDA tensors the
Triton kernels run; elsewhere each fused op calls the original modules, so the model computes
the same thing on any device. Blocks with an ablation the kernels do not cover (grouped spatial
convs, pointwise-first order, an inner BN or activation) keep their own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import MaxPool2d, SpectrumConv
from ..models.xception import Shortcut, Stem, XceptionBlock
from .kernels.ops import batchnorm_act, depthwise_conv, depthwise_supported, maxpool_add

_BLOCK_CHILDREN = {"acts", "sepconvs", "bns", "pool", "shortcut", "act_out"}


def block_fusable(block: XceptionBlock) -> str | None:
    """None if the fused forward computes exactly this block's forward, else the reason not."""
    if type(block) not in (XceptionBlock, FusedXceptionBlock):
        return f"unknown block type {type(block).__name__}"
    extra = {name for name, _ in block.named_children()} - _BLOCK_CHILDREN
    if extra:
        return f"unknown submodules {sorted(extra)}"
    for sep in block.sepconvs:
        if not isinstance(sep, SpectrumConv) or sep.order != "depthwise_first":
            return "only depthwise-first separable convs are fused"
        if not (isinstance(sep.mid_norm, nn.Identity) and isinstance(sep.mid_act, nn.Identity)):
            return "an inner BN or activation is not fused"
        if not depthwise_supported(sep.spatial):
            return "the spatial conv is not depthwise (segments < channels)"
    if not all(isinstance(bn, nn.BatchNorm2d | nn.Identity) for bn in block.bns):
        return "a norm layer other than BatchNorm2d (or one folded away)"
    if not all(isinstance(a, nn.ReLU | nn.Identity) for a in (*block.acts, block.act_out)):
        return "an activation other than ReLU"
    if not isinstance(block.pool, nn.Identity | MaxPool2d):
        return f"unknown pool {type(block.pool).__name__}"
    if block.shortcut is not None and not isinstance(block.shortcut, nn.Identity | Shortcut):
        return f"unknown shortcut {type(block.shortcut).__name__}"
    return None


def _bn(module: nn.Module) -> nn.BatchNorm2d | None:
    """A BatchNorm to fuse, or None where it was folded into the conv (``nn.Identity``)."""
    return module if isinstance(module, nn.BatchNorm2d) else None


class FusedXceptionBlock(XceptionBlock):
    """An ``XceptionBlock`` whose forward runs the fused ops (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, pending = x, None
        for act, sep, bn in zip(self.acts, self.sepconvs, self.bns, strict=True):
            d = depthwise_conv(y, sep.spatial, bn=pending, relu=isinstance(act, nn.ReLU))
            y, pending = sep.pointwise(d), _bn(bn)
        relu_out = isinstance(self.act_out, nn.ReLU)
        shortcut = self.shortcut
        if isinstance(self.pool, nn.Identity):
            if isinstance(shortcut, Shortcut):
                res = batchnorm_act(shortcut.conv(x), _bn(shortcut.bn))
            else:
                res = None if shortcut is None else x
            return batchnorm_act(y, pending, relu=relu_out, residual=res)
        res, res_bn = None, None
        if isinstance(shortcut, Shortcut):
            res, res_bn = shortcut.conv(x), _bn(shortcut.bn)
        elif shortcut is not None:
            res = x
        out = maxpool_add(y, self.pool, bn=pending, residual=res, res_bn=res_bn)
        return F.relu(out) if relu_out else out


class FusedStem(Stem):
    """The stem with each BN + ReLU in one pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = batchnorm_act(self.conv1(x), _bn(self.bn1), relu=True)
        return batchnorm_act(self.conv2(x), _bn(self.bn2), relu=True)


def fuse_model(model: nn.Module, channels_last: bool = True) -> dict[str, int]:
    """Fuse ``model``'s stem and blocks in place; returns counts of fused and kept blocks.
    For training on a GPU: ``fuse_model(model)``, then train as usual (autocast, DDP, EMA).

    Parameters, buffers and state-dict keys are untouched (only classes change), so optimizers,
    checkpoints and EMA copies keep working; ``unfuse`` reverts. The kernels work on NHWC, so by
    default the model is also moved to channels_last.
    """
    counts = {"fused": 0, "kept": 0}
    for module in model.modules():
        if type(module) is Stem and isinstance(module.act, nn.ReLU) and all(
                isinstance(b, nn.BatchNorm2d | nn.Identity) for b in (module.bn1, module.bn2)):
            module.__class__ = FusedStem
        elif type(module) is XceptionBlock:
            if block_fusable(module) is None:
                module.__class__ = FusedXceptionBlock
                counts["fused"] += 1
            else:
                counts["kept"] += 1
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return counts


def unfuse(model: nn.Module) -> nn.Module:
    """Undo ``fuse_model`` (the memory format is left as it is)."""
    for module in model.modules():
        if type(module) is FusedXceptionBlock:
            module.__class__ = XceptionBlock
        elif type(module) is FusedStem:
            module.__class__ = Stem
    return model
